"""Job per task, end to end on an emulated cluster: a real Prefect server and the real process
worker (Conductor's standalone stack) run ``conductor-task`` flow runs whose engine stays in
the worker while each agent, command and verify runs in a Job of its own, created by the
``kubernetes`` placement. The agent is the real ``claude`` binary against the scripted model.

Emulated, and why: no Kubernetes API server or kubelet can run on these machines (see
kube_emulator.py for what the emulator and the test kubelet do, and how they differ from a
real cluster). Driven through the ``conductor`` CLI, as a user would. One stack, one model and
one emulated cluster serve the whole module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kube_emulator import Cluster, emulated_cluster

from claude_conductor.agents.argv import find_claude
from claude_conductor.client.connection import conductor_client, run_sync
from claude_conductor.client.tasks import read_report
from claude_conductor.demo.script_steps import stall, text, tool_use
from claude_conductor.demo.scripted_model import ScriptedModel
from claude_conductor.settings import ConductorSettings
from claude_conductor.tiers import standalone
from helpers import git, make_repo
from stack_fixtures import free_port, make_settings

pytestmark = [pytest.mark.kubernetes, pytest.mark.integration, pytest.mark.timeout(600)]

API_KEY = "sk-k8s-e2e-key-0123456789abcdef"
NAMESPACE = "conductor-agents"
T = TypeVar("T")


@dataclass
class JobStack:
    settings: ConductorSettings
    model: ScriptedModel
    cluster: Cluster
    env: dict[str, str]
    repo: Path

    def cli(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "claude_conductor.cli.main", *args],
            env=self.env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def run(self, *args: str) -> dict[str, Any]:
        out = self.cli("run", *args, "--repo", str(self.repo), "--wait", "--json")
        assert out.returncode in (0, 1), out.stderr
        doc: dict[str, Any] = json.loads(out.stdout)
        return doc

    def submit(self, *args: str) -> str:
        out = self.cli("run", *args, "--repo", str(self.repo))
        assert out.returncode == 0, out.stderr
        return next(x for x in out.stderr.splitlines() if x.startswith("submitted ")).split()[1]

    def show(self, task_id: str, *, wait: bool = False) -> dict[str, Any]:
        out = self.cli("tasks", "show", task_id, "--json", *(["--wait"] if wait else []))
        assert out.returncode in (0, 1), out.stderr
        doc: dict[str, Any] = json.loads(out.stdout)
        return doc

    def jobs_of(self, task_id: str) -> list[dict[str, Any]]:
        return [
            j for j in self.cluster.objects("jobs", NAMESPACE)
            if j["metadata"]["labels"].get("conductor.io/task") == task_id.lower()
        ]  # fmt: skip

    def pods_of(self, task_id: str) -> list[dict[str, Any]]:
        return [
            p for p in self.cluster.objects("pods", NAMESPACE)
            if p["metadata"]["labels"].get("conductor.io/task") == task_id.lower()
        ]  # fmt: skip


def _wait_for(predicate: Callable[[], T], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def job_stack(tmp_path_factory: pytest.TempPathFactory, agent_home: Path) -> Iterator[JobStack]:
    try:
        find_claude(ConductorSettings())
    except Exception as exc:  # pragma: no cover - only without the dev install
        pytest.skip(f"no claude binary: {exc}")
    root = tmp_path_factory.mktemp("k8s-e2e")
    repo = make_repo(root / "project")
    settings = make_settings(root / "home", free_port(), agents=2)
    with ScriptedModel() as model, emulated_cluster() as cluster:
        clean = {
            k: v for k, v in os.environ.items() if not k.startswith(("CONDUCTOR_", "PREFECT_"))
        }
        env = {
            **clean,
            "ANTHROPIC_BASE_URL": model.url,
            "ANTHROPIC_API_KEY": API_KEY,
            "CLAUDE_CODE_MAX_RETRIES": "0",
            "HOME": str(agent_home),
            "CONDUCTOR_HOME": str(settings.home),
            "CONDUCTOR_SERVER__PORT": str(settings.server.port),
            "CONDUCTOR_WORKER__QUERY_SECONDS": "0.5",
            "CONDUCTOR_DASHBOARD__ENABLED": "false",
            "CONDUCTOR_AGENT__RESULT_GRACE_SECONDS": "1",
            "CONDUCTOR_AGENT__KILL_GRACE_SECONDS": "3",
            # The Job-per-task mode: what components/job-per-task sets on the worker.
            "CONDUCTOR_AGENT__PLACEMENT": "kubernetes",
            "CONDUCTOR_AGENT__KUBERNETES__API_URL": cluster.url,
            "CONDUCTOR_AGENT__KUBERNETES__NAMESPACE": NAMESPACE,
            "CONDUCTOR_AGENT__KUBERNETES__DEADLINE_MARGIN_SECONDS": "60",
        }
        try:
            standalone.up(settings, base_env=env, timeout_seconds=180)
            yield JobStack(settings, model, cluster, env, repo)
        finally:
            standalone.down(settings, grace_seconds=5)


def test_a_task_succeeds_in_its_own_pod_and_its_work_is_in_prefect(job_stack: JobStack) -> None:
    marker = job_stack.model.add_script(
        "k8s-hello",
        [tool_use("Write", {"file_path": "hello.txt", "content": "hello from a pod\n"}),
         text("Wrote hello.txt in the pod.")],
    )  # fmt: skip
    doc = job_stack.run(
        "--prompt", f"say hello {marker}", "--kind", "generic", "--verify", "grep -q pod hello.txt"
    )
    assert doc["status"] == "succeeded", doc
    assert doc["files_changed"] == ["hello.txt"]
    assert doc["verify"]["exit_code"] == 0  # verify ran in a pod that had the agent's changes
    assert git(job_stack.repo, "show", f"{doc['branch']}:hello.txt") == "hello from a pod\n"
    task_id = doc["task_id"]
    # One Job for the agent, one for verify; both gone now, with their pods' processes.
    seen = [j for j in job_stack.cluster.kubelet.jobs_seen if task_id.lower() in j]
    assert (
        len(seen) == 2 and any("-agent-" in j for j in seen) and any("-shell-" in j for j in seen)
    )
    for name in seen:  # the agent pod holds no credential: no token, none in its spec
        pod = job_stack.cluster.kubelet.job_manifests[name]["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert API_KEY not in json.dumps(pod) and "PREFECT" not in json.dumps(pod)
    _wait_for(lambda: not job_stack.jobs_of(task_id), 20, "the Jobs to be deleted")
    _wait_for(lambda: not job_stack.pods_of(task_id), 15, "the pods to be deleted")
    _wait_for(lambda: not job_stack.cluster.live_processes(), 15, "the pods' processes to end")

    async def report() -> str:
        async with conductor_client(job_stack.settings) as client:
            return await read_report(client, task_id)

    stored = run_sync(report())
    assert "hello.txt" in stored and "hello from a pod" in stored
    assert API_KEY not in stored


def test_a_pod_that_dies_is_reported_with_its_reason(job_stack: JobStack) -> None:
    marker = job_stack.model.add_script("k8s-oom", [stall(30)])
    job_stack.cluster.kubelet.oom_kill_next()
    doc = job_stack.run("--prompt", f"use all the memory {marker}", "--kind", "generic")
    assert doc["status"] == "failed", doc
    assert "OOMKilled" in doc["error"], doc["error"]
    _wait_for(lambda: not job_stack.jobs_of(doc["task_id"]), 20, "the Job to be deleted")


def test_a_cancelled_task_leaves_no_pod(job_stack: JobStack) -> None:
    marker = job_stack.model.add_script("k8s-hang", [stall(600)])
    task_id = job_stack.submit("--prompt", f"hang {marker}", "--kind", "generic")
    _wait_for(
        lambda: any(
            p.get("status", {}).get("phase") == "Running" for p in job_stack.pods_of(task_id)
        ),
        120,
        "the agent pod to run",
    )
    out = job_stack.cli("tasks", "cancel", task_id)
    assert out.returncode == 0, out.stderr
    _wait_for(lambda: not job_stack.pods_of(task_id), 30, "the agent pod to be deleted")
    _wait_for(lambda: not job_stack.cluster.live_processes(), 15, "the pod's process to end")
    assert not job_stack.jobs_of(task_id)
    doc = _wait_for(
        lambda: (d := job_stack.show(task_id))["state"] in ("Cancelled", "Crashed") and d,
        60,
        "the run to end",
    )
    assert doc["state"] == "Cancelled"


def test_a_task_over_its_deadline_ends_timed_out(job_stack: JobStack) -> None:
    marker = job_stack.model.add_script("k8s-slow", [stall(600)])
    doc = job_stack.run("--prompt", f"take forever {marker}", "--kind", "generic", "--timeout", "8")
    assert doc["status"] == "timed_out", doc
    task_id = doc["task_id"]
    (job,) = [j for j in job_stack.cluster.kubelet.jobs_seen if task_id.lower() in j]
    # Kubernetes' own bound, had the engine died: the timeout plus the margin, then the TTL.
    spec = job_stack.cluster.kubelet.job_manifests[job]["spec"]
    assert spec["activeDeadlineSeconds"] == 8 + 60
    assert spec["ttlSecondsAfterFinished"] > 0
    _wait_for(lambda: not job_stack.jobs_of(task_id), 20, "the Job to be deleted")
    # Deleting a Job returns before its pod is gone: SIGTERM, grace, SIGKILL (as on a cluster).
    _wait_for(lambda: not job_stack.cluster.live_processes(), 15, "the pod's process to end")
