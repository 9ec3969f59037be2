"""The ``kubernetes`` placement without Prefect: the real runtime (``run_agent``,
``run_shell``) starts the attach helper, which creates the agent Job on an emulated cluster
(see kube_emulator.py: why emulated, and what the test kubelet does), streams the worktree
into the pod, follows its log, and brings the changes back. The agent is the real ``claude``
binary talking to the scripted model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from kube_emulator import Cluster, emulated_cluster

from claude_conductor.agents.kubernetes_placement import KubernetesPlacement
from claude_conductor.agents.placement import LaunchRequest
from claude_conductor.agents.runtime import run_agent
from claude_conductor.agents.shell import run_shell
from claude_conductor.demo.script_steps import text, tool_use
from claude_conductor.demo.scripted_model import ScriptedModel
from claude_conductor.models import TaskSpec, TaskStatus
from claude_conductor.settings import AgentSettings, ConductorSettings
from helpers import git, make_repo

pytestmark = [pytest.mark.kubernetes, pytest.mark.integration]

NAMESPACE = "conductor-test"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with emulated_cluster() as c:
        yield c


def _settings(tmp_path: Path, cluster: Cluster) -> ConductorSettings:
    return ConductorSettings(
        home=tmp_path / "home",
        agent=AgentSettings(
            placement="kubernetes",
            inactivity_timeout_seconds=60,
            result_grace_seconds=1,
            kill_grace_seconds=2,
            kubernetes={"api_url": cluster.url, "namespace": NAMESPACE},
        ),
    )


def _gone(cluster: Cluster, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not cluster.objects("jobs", NAMESPACE) and not cluster.live_processes():
            return
        time.sleep(0.2)
    raise AssertionError(
        f"left behind: jobs {[j['metadata']['name'] for j in cluster.objects('jobs', NAMESPACE)]}"
        f", pod processes {cluster.live_processes()}"
    )


async def test_agent_runs_in_a_pod_and_its_changes_come_back(
    cluster: Cluster,
    scripted_model: ScriptedModel,
    agent_env: dict[str, str],
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "notes.txt").write_text("untracked but not ignored\n")
    marker = scripted_model.add_script(
        "k8s-write",
        [
            tool_use("Write", {"file_path": "hello.txt", "content": "hello from a pod\n"}),
            tool_use("Bash", {"command": "cat notes.txt > copied.txt && pwd > where.txt"}),
            text("Wrote hello.txt."),
        ],
    )
    settings = _settings(tmp_path, cluster)
    spec = TaskSpec(kind="generic", prompt=f"write {marker}", timeout_seconds=120)
    outcome = await run_agent(
        spec, repo, settings,
        transcript_path=tmp_path / "t.jsonl", config_dir=tmp_path / "cfg", base_env=agent_env,
    )  # fmt: skip
    assert outcome.status is TaskStatus.SUCCEEDED, (outcome.error, outcome.stderr_tail)
    assert outcome.result is not None and outcome.result.total_cost_usd > 0
    # The pod's changes are in the engine's worktree, not committed yet (the engine commits).
    assert (repo / "hello.txt").read_text() == "hello from a pod\n"
    assert (repo / "copied.txt").read_text() == "untracked but not ignored\n"
    # The agent ran in the pod's own workspace, not in the engine's worktree.
    assert Path((repo / "where.txt").read_text().strip()) != repo
    assert "hello.txt" in git(repo, "status", "--porcelain")
    # The transcript is the agent's stream, the API key never in it.
    transcript = (tmp_path / "t.jsonl").read_text()
    assert '"type": "result"' in transcript or '"type":"result"' in transcript
    assert agent_env["ANTHROPIC_API_KEY"] not in transcript
    # The Job that ran it is gone, and so is its pod's process.
    _gone(cluster)
    job = cluster.kubelet.jobs_seen[-1]
    assert job.startswith("cc-") and "-agent-" in job


async def test_a_command_runs_in_a_pod_and_failures_keep_their_output(
    cluster: Cluster, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    settings = _settings(tmp_path, cluster)
    placement = KubernetesPlacement(settings)
    env = {"PATH": "/usr/bin:/bin", "SECRET_TOKEN": "never-in-the-job"}
    ok = await run_shell(
        "echo made > made.txt && echo done", repo, 60, env, placement=placement, task_id="t1"
    )
    assert ok.exit_code == 0 and "done" in ok.output_tail
    assert (repo / "made.txt").read_text() == "made\n"
    bad = await run_shell("echo oops >&2; exit 3", repo, 60, env, placement=placement, task_id="t2")
    assert bad.exit_code == 3 and "oops" in bad.output_tail
    _gone(cluster)


def test_the_job_goes_when_the_engine_dies(cluster: Cluster, tmp_path: Path) -> None:
    """No orphans: the engine SIGKILLed (no cleanup hook runs) -> the attach helper sees its
    parent gone, deletes the Job (and so the pod), and exits."""
    repo = make_repo(tmp_path / "repo")
    placement = KubernetesPlacement(_settings(tmp_path, cluster))
    plan = placement.plan(
        LaunchRequest(
            task_id="orphan", role="shell", argv=["/bin/sh", "-c", "sleep 600"],
            env={"PATH": "/usr/bin:/bin"}, workspace=repo, timeout_seconds=600,
        )
    )  # fmt: skip
    engine = subprocess.Popen(
        [sys.executable, "-c", ENGINE, json.dumps(plan.argv), json.dumps(plan.env), str(repo)],
        stdout=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    assert engine.stdout is not None
    helper = int(engine.stdout.readline())
    deadline = time.monotonic() + 60
    while not cluster.live_processes():
        assert time.monotonic() < deadline, "the agent pod never ran"
        time.sleep(0.2)
    os.killpg(engine.pid, signal.SIGKILL)
    engine.wait(10)
    _gone(cluster, timeout=30)
    deadline = time.monotonic() + 15
    while psutil.pid_exists(helper) and psutil.Process(helper).status() != "zombie":
        assert time.monotonic() < deadline, "the attach helper outlived its engine"
        time.sleep(0.2)


ENGINE = """import json, subprocess, sys, time
argv, env, cwd = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
helper = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True)
print(helper.pid, flush=True)
time.sleep(600)
"""
