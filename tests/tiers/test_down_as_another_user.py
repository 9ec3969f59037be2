"""`conductor up` and `conductor down` run without privileges: the worker, its forkserver and
every forked engine are non-dumpable (they hold the API credential), so their environment
cannot be read even by the user who started them, and `down` must still find and stop a
running flow run (from the forkserver's records and the process tree).

A private stack (down stops it), run through ``setpriv`` when the tests run as root (as
``nobody``, or as root without capabilities where nobody cannot run this Python), as the
tests' own user otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from prefect.client.schemas.objects import FlowRun

from claude_conductor.client.connection import conductor_client
from claude_conductor.client.deployments import register_deployments
from claude_conductor.system import processes
from claude_conductor.tiers import standalone
from claude_conductor.tiers.standalone import launch
from claude_conductor.work_pools.forking import run_records_dir
from stack_fixtures import SLEEPY, free_port, make_settings, stack_env

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc"),
]

NOBODY = 65534


def _nobody_can_run_python() -> bool:
    probe = [*_NOBODY, "/bin/sh", "-c", f'exec "{sys.executable}" -c ""']
    return subprocess.run(probe, capture_output=True, timeout=60).returncode == 0


_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
# Root without any capability: like any other user, it may not read a non-dumpable process's
# environment (that takes CAP_SYS_PTRACE), but it can still run an interpreter under /root.
_ROOT_WITHOUT_CAPABILITIES = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"]


@pytest.fixture(scope="module")
def as_user() -> list[str]:
    """How to run the stack's commands unprivileged: the tests' own user when not root;
    ``nobody`` when root and this Python can be run by it; else root stripped of every
    capability (this machine's interpreter may live under /root, which nobody cannot reach)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv (util-linux) to drop privileges")
    return _NOBODY if _nobody_can_run_python() else _ROOT_WITHOUT_CAPABILITIES


@pytest.fixture
def root_dir(as_user: list[str]) -> Iterator[Path]:
    """A folder the unprivileged user owns (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="conductor-nonroot-"))
    if as_user == _NOBODY:
        os.chown(path, NOBODY, NOBODY)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _cli(
    as_user: list[str], env: dict[str, str], *args: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*as_user, sys.executable, "-m", "claude_conductor.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _running_engine(settings_home: Path, port: int, gate: Path) -> tuple[FlowRun, int]:
    settings = make_settings(settings_home, port)
    register_deployments(settings, (SLEEPY,))

    async def go() -> tuple[FlowRun, int]:
        async with conductor_client(settings) as client:
            deployment = await client.read_deployment_by_name(SLEEPY.full_name)
            spec = {"label": "held", "gate": str(gate), "sleep_seconds": 300}
            run = await client.create_flow_run_from_deployment(
                deployment.id, parameters={"spec": spec}
            )
            deadline = time.monotonic() + 120
            while True:
                run = await client.read_flow_run(run.id)
                _, _, pid = (run.infrastructure_pid or "").rpartition(":")
                if run.state is not None and run.state.is_running() and pid.isdigit():
                    return run, int(pid)
                assert time.monotonic() < deadline, run.state
                await asyncio.sleep(0.2)

    return asyncio.run(go())


def test_down_run_unprivileged_stops_a_running_forked_flow_run(
    as_user: list[str], root_dir: Path
) -> None:
    port = free_port()
    home = root_dir / "home"
    env = {
        **stack_env(),
        "HOME": str(root_dir),
        "CONDUCTOR_HOME": str(home),
        "CONDUCTOR_SERVER__PORT": str(port),
        "CONDUCTOR_DASHBOARD__ENABLED": "false",
        "CONDUCTOR_WORKER__QUERY_SECONDS": "0.5",
        "CONDUCTOR_WORKER__PRELOAD": json.dumps(["conductor_stack_test_flows"]),
    }
    settings = make_settings(home, port)
    try:
        up = _cli(as_user, env, "up", "--no-dashboard", "--json", timeout=420)
        assert up.returncode == 0, up.stderr[-3000:]
        _, engine = _running_engine(home, port, root_dir / "never-opened")
        if as_user == _NOBODY:
            assert psutil.Process(engine).uids().real == NOBODY
        # The premise: that user cannot read the engine's environment ...
        peek = subprocess.run(
            [*as_user, "cat", f"/proc/{engine}/environ"], capture_output=True, timeout=30
        )
        assert launch.STACK_MARKER.encode() not in peek.stdout
        # ... but the forkserver recorded it.
        assert [r.pid for r in processes.recorded_processes(run_records_dir(settings))] == [engine]

        down = _cli(as_user, env, "down", "--json", timeout=180)
        assert down.returncode == 0, down.stderr[-3000:]
        stopped = json.loads(down.stdout)
        assert {"name": "flow-run", "pid": engine} in [
            {"name": d["name"], "pid": d["pid"]} for d in stopped
        ], stopped
        assert not processes.pid_alive(engine)
        assert processes.find_processes_with_env(launch.STACK_MARKER, str(home)) == []
        assert processes.recorded_processes(run_records_dir(settings)) == []
    finally:
        standalone.down(settings, grace_seconds=5)  # as root: whatever a failure left
