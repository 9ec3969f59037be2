"""The warm pool (the default agent mode): the queue depth the KEDA ScaledObject reads shows a
burst submitted while no agent pod runs (scale from zero), then two agent-worker "pods" take
the tasks from the one pool and it falls back to zero.

What stands in, and why: no kubelet can run here, so each pod is a local process started with
the container command, the conductor-config values and the $(VAR) expansion of the *rendered*
agent-pool Deployment (the prod overlay), and the exporter likewise from the rendered
conductor-metrics Deployment. Overridden, because a laptop is not a cluster: the API URL (a
real Prefect server on SQLite on a free port instead of the prefect-api Service), the home
folder, the health port (each pod has its own network namespace; processes share one), and
the database/Redis settings only the server reads. The tasks are ``kind: command`` tasks, run
by the real engine with placement ``process``, as in the pods.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from k8s_fixtures import Rendered, free_port, stop_group, wait_http
from prometheus_client.parser import text_string_to_metric_families

from claude_conductor.client.connection import conductor_client, run_sync
from claude_conductor.client.tasks import submit_task, wait_for_run
from claude_conductor.models import TaskSpec
from claude_conductor.settings import load_settings
from claude_conductor.tiers.kubernetes.configure import configure
from helpers import make_repo

pytestmark = [pytest.mark.kubernetes, pytest.mark.integration, pytest.mark.timeout(600)]

BURST = 6
_SERVER_ONLY = ("PREFECT_SERVER_", "PREFECT_MESSAGING_", "PREFECT_REDIS_", "PREFECT_UI_")
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in args and env values."""
    return _VAR.sub(lambda m: env.get(m[1], m[0]), value)


def _pod(
    r: Rendered, deployment: str, pod_name: str, overrides: dict[str, str]
) -> tuple[list[str], dict[str, str]]:
    """argv and environment of a Deployment's container, as the kubelet would start it."""
    config = next(
        c for c in r.of_kind("ConfigMap") if c["metadata"]["name"].startswith("conductor-config")
    )["data"]
    container = r.get("Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]
    env = {k: v for k, v in config.items() if not k.startswith(_SERVER_ONLY)}
    env.update(overrides)
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = _expand(item["value"], env)
        elif item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[item["name"]] = pod_name
    env.update(overrides)
    argv = [_expand(a, env) for a in [*container.get("command", []), *container["args"]]]
    argv[0] = str(Path(sys.executable).with_name(argv[0]))  # the image's PATH
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CONDUCTOR_"))}
    return argv, {**base, **env}


def _depth(url: str, pool: str) -> float:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "conductor_queue_depth"
        for sample in family.samples
        if sample.labels.get("pool") == pool
    )


def test_two_pods_share_one_pool_and_the_scaler_sees_the_backlog(
    rendered: dict[str, Rendered], prefect_api_url: str, tmp_path: Path
) -> None:
    prod = rendered["prod"]
    # The ScaledObject asks Prometheus for this metric and pool: the exporter must serve them.
    query = prod.get("ScaledObject", "agent-pool")["spec"]["triggers"][0]["metadata"]["query"]
    match = re.fullmatch(r'sum\((\w+)\{pool="([^"]+)"\}\)', query)
    assert match, query
    metric, pool = match.groups()
    assert metric == "conductor_queue_depth"
    home = tmp_path / "home"
    overrides = {
        "CONDUCTOR_API_URL": prefect_api_url,
        "PREFECT_API_URL": prefect_api_url,
        "CONDUCTOR_HOME": str(home),
        "CONDUCTOR_AGENTS_PER_POD": "1",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1",
    }
    argv, env = _pod(prod, "agent-pool", "agent-pool-a", overrides)
    assert env["CONDUCTOR_WORKER__POOL"] == pool
    assert argv[3:5] == ["--type", "conductor"] and argv[argv.index("--limit") + 1] == "1"
    settings = load_settings(
        home=home, server={"api_url": prefect_api_url}, worker={"pool": pool, "agents": 8}
    )
    run_sync(configure(settings))  # what the conductor-configure Job does in the cluster

    procs: list[subprocess.Popen[bytes]] = []
    logs = {name: tmp_path / f"{name}.log" for name in ("agent-pool-a", "agent-pool-b")}
    try:
        metrics_port = free_port()
        argv, env = _pod(prod, "conductor-metrics", "conductor-metrics-0", overrides)
        argv[argv.index("--host") + 1] = "127.0.0.1"
        argv[argv.index("--port") + 1] = str(metrics_port)
        argv += ["--ttl-seconds", "0.5"]
        with (tmp_path / "metrics.log").open("wb") as out:
            procs.append(subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            ))  # fmt: skip
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        wait_http(url, 120, procs[-1])
        assert _depth(url, pool) == 0

        repo = make_repo(tmp_path / "repo")

        def task() -> TaskSpec:  # a fresh id each time
            return TaskSpec(kind="command", command="sleep 6", repo=str(repo), timeout_seconds=120)

        async def burst() -> list[Any]:
            async with conductor_client(settings) as client:
                return list(
                    await asyncio.gather(*(submit_task(client, task()) for _ in range(BURST)))
                )

        # A backlog while no agent pod runs (what scales the pool up from zero): the scaler's
        # metric shows all of it. Timing-free: nothing takes a run before the pods start.
        runs = run_sync(burst())
        seen = [_depth(url, pool)]
        deadline = time.monotonic() + 60
        while seen[-1] < BURST and time.monotonic() < deadline:
            time.sleep(0.5)
            seen.append(_depth(url, pool))
        assert seen[-1] == BURST, seen

        # Two pods start and share the pool; the metric falls back to zero as they drain it.
        for name, log in logs.items():
            port = str(free_port())
            argv, env = _pod(
                prod, "agent-pool", name, {**overrides, "PREFECT_WORKER_WEBSERVER_PORT": port}
            )
            with log.open("wb") as out:
                procs.append(subprocess.Popen(
                    argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                ))  # fmt: skip
            wait_http(f"http://127.0.0.1:{port}/health", 120, procs[-1])
        deadline = time.monotonic() + 300
        while seen[-1] > 0 and time.monotonic() < deadline:
            time.sleep(0.5)
            seen.append(_depth(url, pool))

        async def finish() -> list[str]:
            async with conductor_client(settings) as client:
                done = [await wait_for_run(client, r.id, timeout_seconds=240) for r in runs]
                return [r.state.name if r.state else "" for r in done]

        assert run_sync(finish()) == ["Completed"] * BURST
        assert seen[-1] == 0 and _depth(url, pool) == 0, seen
        # Both pods took tasks from the one pool.
        for name, log in logs.items():
            assert any(str(r.id) in log.read_text() for r in runs), f"{name} ran no task"
    finally:
        for proc in procs:
            stop_group(proc, grace=10)
            if proc.poll() is None:  # prefect worker may ignore one SIGTERM when idle
                stop_group(proc, grace=5)
