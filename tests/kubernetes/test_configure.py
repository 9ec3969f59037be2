"""The configure Job's work (``python -m claude_conductor.tiers.kubernetes.configure``) against a
real Prefect server: Job-per-task mode makes the agents pool a kubernetes pool carrying
Conductor's agent Job template with this stack's namespace, image and model endpoint, and the
server then refuses job variables outside the template's bounds."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.exceptions import PrefectHTTPStatusError

from claude_conductor.client.connection import conductor_client, run_sync
from claude_conductor.settings import load_settings
from claude_conductor.tiers.kubernetes.configure import ClusterSpec, configure
from claude_conductor.work_pools.deployments import TASK_DEPLOYMENT

pytestmark = [pytest.mark.kubernetes, pytest.mark.integration]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "false",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}  # fmt: skip
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("prefect")), "server", "start", "--host",
         "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/api"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 120
    while True:
        try:
            with opener.open(f"{url}/health", timeout=2):
                break
        except OSError:
            assert proc.poll() is None, "prefect server exited"
            assert time.monotonic() < deadline, "prefect server did not answer in 120 s"
            time.sleep(0.3)
    try:
        yield url
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=15)
        log.close()


def test_jobs_mode_installs_the_agent_job_template(api_url: str, tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, server={"api_url": api_url})
    spec = ClusterSpec(
        mode="jobs", namespace="team-a", image="registry.example.com/cc:0.1.0",
        model_url="http://egress-proxy:3128",
    )  # fmt: skip
    done = run_sync(configure(settings, spec))
    assert any("kubernetes Jobs of registry.example.com/cc:0.1.0" in line for line in done)
    # Idempotent: a second configure updates in place.
    run_sync(configure(settings, spec))

    async def check() -> None:
        async with conductor_client(settings) as client:
            pool = await client.read_work_pool(settings.worker.pool)
            assert pool.type == "kubernetes"
            assert pool.concurrency_limit == settings.worker.agents
            config = pool.base_job_template["job_configuration"]
            assert config["namespace"] == "team-a"
            container = config["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
            assert container["image"] == "registry.example.com/cc:0.1.0"
            env = pool.base_job_template["variables"]["properties"]["env"]["default"]
            assert env["ANTHROPIC_BASE_URL"] == "http://egress-proxy:3128"
            queues = {q.name for q in await client.read_work_queues(work_pool_name=pool.name)}
            assert {"urgent", "normal", "low"} <= queues
            deployment = await client.read_deployment_by_name(
                f"{TASK_DEPLOYMENT.flow_name}/{TASK_DEPLOYMENT.name}"
            )
            ok = await client.create_flow_run_from_deployment(
                deployment.id,
                parameters={"spec": {}},
                job_variables={"active_deadline_seconds": 400},
            )
            assert ok.job_variables == {"active_deadline_seconds": 400}
            with pytest.raises(PrefectHTTPStatusError):
                await client.create_flow_run_from_deployment(
                    deployment.id, parameters={"spec": {}}, job_variables={"memory_limit": "64Ti"}
                )

    run_sync(check())


def test_bad_mode_names_the_variable() -> None:
    from claude_conductor.errors import InputError

    with pytest.raises(InputError, match="CONDUCTOR_K8S_AGENT_MODE='pods'"):
        ClusterSpec.from_env({"CONDUCTOR_K8S_AGENT_MODE": "pods"})
    assert ClusterSpec.from_env({}).mode == "warm"
