"""Fixtures of the Kubernetes tier's tests: kubectl (for ``kubectl kustomize``, which renders
offline) and the rendered overlays, once per session.

No API server can run on these machines (see the emulated end-to-end test), so manifests are
judged offline: strict schema validation (kubernetes-validate), a policy scanner (checkov) and
the project's own checks. Without kubectl the tests skip and say how to get it; under CI (``CI``
set) they fail instead, because CI's machine has it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from claude_conductor.agents.kubernetes_placement import (
    job_name,
    load_job_template,
    render_agent_job,
)
from claude_conductor.agents.placement import LaunchRequest
from claude_conductor.settings import AgentSettings, ConductorSettings

REPO = Path(__file__).resolve().parents[2]
TREE = REPO / "deployments" / "kubernetes"
RESTORE_JOB = TREE / "restore" / "restore-job.yaml"


def need(condition: bool, message: str) -> None:
    """Skip (or, under CI, fail) when infrastructure is missing."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the kubernetes tests, but {message}")
    pytest.skip(message)


@dataclass(frozen=True)
class Rendered:
    """One rendered variant of the tree: its name, YAML text and objects."""

    name: str
    text: str
    docs: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert found, f"{self.name}: no {kind}/{name}"
        return found[0]


@pytest.fixture(scope="session")
def kubectl() -> str:
    path = shutil.which("kubectl")
    need(
        path is not None,
        "kubectl is not installed (it renders the kustomize tree offline): install the "
        "`kubectl` package (Kubernetes' apt repository) or any kubectl >= 1.27 on PATH",
    )
    assert path is not None
    return path


def _kustomize(kubectl: str, path: Path) -> str:
    proc = subprocess.run(
        [kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return proc.stdout


def _with_components(tmp: Path, overlay: str, components: list[str]) -> Path:
    """A kustomization that adds components to an overlay (as a user would in the overlay)."""
    tmp.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(TREE, tmp)
    (tmp / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "claude-conductor",
                "resources": [f"{rel}/overlays/{overlay}"],
                "components": [f"{rel}/components/{c}" for c in components],
            }
        )
    )
    return tmp


@pytest.fixture(scope="session")
def rendered(kubectl: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendered]:
    """dev, prod, prod with the Job-per-task component, dev with the HPA alternative to KEDA."""
    tmp = tmp_path_factory.mktemp("kustomize")
    sources = {
        "dev": TREE / "overlays" / "dev",
        "prod": TREE / "overlays" / "prod",
        "prod-jobs": _with_components(tmp / "prod-jobs", "prod", ["job-per-task"]),
        "dev-hpa": _with_components(tmp / "dev-hpa", "dev", ["hpa-queue-depth"]),
    }
    out: dict[str, Rendered] = {}
    for name, path in sources.items():
        text = _kustomize(kubectl, path)
        out[name] = Rendered(name, text, [d for d in yaml.safe_load_all(text) if d])
    restore = RESTORE_JOB.read_text()
    out["restore"] = Rendered("restore", restore, [d for d in yaml.safe_load_all(restore) if d])
    agent = _agent_job(tmp)
    out["agent-job"] = Rendered("agent-job", yaml.safe_dump(agent), [agent])
    return out


def _agent_job(tmp: Path) -> dict[str, Any]:
    """The agent Job the ``kubernetes`` placement renders for a task (Job-per-task mode), with
    the settings the job-per-task component gives the worker."""
    settings = ConductorSettings(
        home=tmp / "home",
        agent=AgentSettings(
            placement="kubernetes",
            kubernetes={"namespace": "claude-conductor", "image": "claude-conductor:0.1.0"},
        ),
    )
    request = LaunchRequest(
        task_id="t-20261205-000000-abcdef", role="agent", argv=["claude", "--print"],
        env={}, workspace=tmp, timeout_seconds=900,
    )  # fmt: skip
    kube = settings.agent.kubernetes
    return render_agent_job(load_job_template(), kube, request, job_name(request.task_id, "agent"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until ``url`` answers (any status), or fail after ``timeout`` seconds."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while True:
        try:
            with opener.open(url, timeout=2):
                return
        except OSError:
            assert proc is None or proc.poll() is None, f"the process serving {url} exited"
            assert time.monotonic() < deadline, f"{url} did not answer in {timeout} s"
            time.sleep(0.3)


def stop_group(proc: subprocess.Popen[bytes], grace: float = 15) -> None:
    """SIGTERM the process group we started, SIGKILL after ``grace``; reaped either way."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


@pytest.fixture(scope="session")
def prefect_api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real Prefect server (SQLite) for the Kubernetes tests that need an API."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CONDUCTOR_"))},
        "PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING",
    }  # fmt: skip
    with (home / "server.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("prefect")), "server", "start", "--host",
             "127.0.0.1", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}/api"
        try:
            wait_http(f"{url}/health", 180, proc)
            yield url
        finally:
            stop_group(proc)
