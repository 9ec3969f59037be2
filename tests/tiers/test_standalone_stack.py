"""The standalone tier against a real Prefect server and real process workers.

One stack serves the whole file (see ``conductor_stack``); the last test takes it down and up
again, so keep it last.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun

from claude_conductor.client.connection import conductor_client
from claude_conductor.client.deployments import register_deployments
from claude_conductor.errors import InputError
from claude_conductor.system import processes
from claude_conductor.tiers import standalone
from claude_conductor.tiers.standalone import addons, launch
from claude_conductor.work_pools.deployments import DEPLOYMENTS
from stack_fixtures import PROBE_VALUE, SLEEPY, Stack, free_port, make_settings, stack_env

pytestmark = pytest.mark.integration


async def _submit(
    client: PrefectClient,
    full_name: str,
    spec: dict[str, Any],
    *,
    queue: str | None = None,
) -> FlowRun:
    deployment = await client.read_deployment_by_name(full_name)
    return await client.create_flow_run_from_deployment(
        deployment.id, parameters={"spec": spec}, work_queue_name=queue
    )


async def _wait_final(
    client: PrefectClient, run_ids: list[UUID], timeout_seconds: float = 120
) -> list[FlowRun]:
    deadline = time.monotonic() + timeout_seconds
    while True:
        runs = [await client.read_flow_run(i) for i in run_ids]
        if all(r.state is not None and r.state.is_final() for r in runs):
            return runs
        if time.monotonic() > deadline:
            states = [r.state.name if r.state else None for r in runs]
            raise AssertionError(f"runs not final after {timeout_seconds}s: {states}")
        await asyncio.sleep(0.25)


async def _wait_running(client: PrefectClient, run_ids: list[UUID], count: int) -> None:
    deadline = time.monotonic() + 90
    while True:
        runs = [await client.read_flow_run(i) for i in run_ids]
        if sum(1 for r in runs if r.state and r.state.is_running()) >= count:
            return
        assert time.monotonic() < deadline, [r.state.name for r in runs if r.state]
        await asyncio.sleep(0.2)


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _max_overlap(records: list[dict[str, Any]]) -> int:
    edges = sorted([(r["start"], 1) for r in records] + [(r["end"], -1) for r in records])
    current = peak = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


def _stack_processes(home: Path) -> list[int]:
    """Every process (not this one) whose environment or command line mentions ``home``."""
    needle = str(home).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            blob = (entry / "environ").read_bytes() + (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in blob and processes.pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def test_up_brings_a_ready_stack(conductor_stack: Stack) -> None:
    info = standalone.status(conductor_stack.settings)
    assert info.healthy
    assert info.api_url == launch.local_api_url(conductor_stack.settings)
    assert info.agents == 2 and info.busy_slots == 0
    by_name = {p.name: p for p in info.pools}
    assert by_name["conductor-agents"].slots == 2
    assert (
        by_name["conductor-coordinators"].slots == conductor_stack.settings.worker.coordinator_slots
    )
    assert all(p.workers_online == 1 and not p.paused for p in info.pools)
    assert set(info.deployments) >= {d.full_name for d in DEPLOYMENTS}
    assert set(info.pids) == {launch.SERVER, launch.AGENT_WORKER, launch.COORDINATOR_WORKER}
    assert all(processes.pid_alive(pid) for pid in info.pids.values())
    # Prefect's state is under the Conductor home, not ~/.prefect.
    assert (conductor_stack.home / "prefect" / "prefect.db").is_file()


def test_second_up_starts_nothing_new(conductor_stack: Stack) -> None:
    before = standalone.status(conductor_stack.settings).pids
    began = time.monotonic()
    steps: list[str] = []
    info = standalone.up(
        conductor_stack.settings, base_env=conductor_stack.env, on_step=steps.append
    )
    assert time.monotonic() - began < 15
    assert info.started == []
    assert not any(step.startswith("starting") for step in steps), steps
    assert any("registering the deployments" in step for step in steps), steps
    assert set(info.already_running) == set(before)
    assert info.pids == before


def _git_repo(root: Path) -> Path:
    repo = root / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=T", "-c", "user.email=t@example.com"]
    git += ["-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=repo, check=True)
    (repo / "README.md").write_text("hello\n")
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], cwd=repo, check=True)
    return repo


def test_task_deployment_completes_through_the_worker(
    conductor_stack: Stack, tmp_path: Path
) -> None:
    spec = {
        "kind": "command",
        "title": "stack smoke",
        "command": "echo done > done.txt",
        "repo": str(_git_repo(tmp_path)),
        "timeout_seconds": 60,
    }

    async def go() -> FlowRun:
        async with conductor_client(conductor_stack.settings) as client:
            run = await _submit(client, "conductor-task/run", spec)
            (final,) = await _wait_final(client, [run.id], timeout_seconds=120)
            return final

    final = asyncio.run(go())
    assert final.state is not None and final.state.is_completed(), final.state
    assert final.work_queue_name == "normal"


def test_fanout_completes_with_a_single_agent_slot(conductor_stack: Stack, tmp_path: Path) -> None:
    """The parent waits on the coordinator pool; its subtasks take the one agent slot in
    turn. (Were the parent on the agent pool, it would hold the slot and wait forever.)"""
    settings = conductor_stack.settings
    repo = str(_git_repo(tmp_path))
    spec = {
        "kind": "generic",
        "title": "fan out",
        "repo": repo,
        "timeout_seconds": 60,
        "subtasks": [
            {"kind": "command", "command": "echo a > a.txt"},
            {"kind": "command", "command": "echo b > b.txt"},
        ],
    }

    async def go() -> tuple[FlowRun, list[FlowRun]]:
        async with conductor_client(settings) as client:
            run = await _submit(client, "conductor-fanout/run", spec)
            (final,) = await _wait_final(client, [run.id], timeout_seconds=180)
            children = await client.read_flow_runs()
            return final, [c for c in children if c.parent_task_run_id is not None]

    standalone.scale_agents(settings, 1)
    try:
        final, children = asyncio.run(go())
    finally:
        standalone.scale_agents(settings, 2)
    assert final.state is not None and final.state.is_completed(), final.state
    assert final.work_pool_name == settings.worker.coordinator_pool
    assert len([c for c in children if c.work_pool_name == settings.worker.pool]) >= 2


def test_agent_slots_bound_concurrency_and_urgent_goes_first(
    conductor_stack: Stack, tmp_path: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    # Prefect 3.8 copies the worker's cwd into each run unless a pull step says otherwise:
    # this file must not show up in any run's directory.
    (conductor_stack.settings.run_dir / "worker-cwd" / "sentinel.txt").write_text("x")

    gate = tmp_path / "open-gate"

    def spec(label: str, seconds: float, **extra: Any) -> dict[str, Any]:
        return {"label": label, "sleep_seconds": seconds, "log": str(log), **extra}

    async def go() -> tuple[list[FlowRun], int, int]:
        async with conductor_client(conductor_stack.settings) as client:
            blockers = [
                await _submit(client, SLEEPY.full_name, spec(f"blocker-{i}", 120, gate=str(gate)))
                for i in range(2)
            ]
            await _wait_running(client, [r.id for r in blockers], 2)
            waiting = [
                await _submit(client, SLEEPY.full_name, spec(f"normal-{i}", 1), queue="normal")
                for i in range(3)
            ]
            urgent = await _submit(client, SLEEPY.full_name, spec("urgent", 1), queue="urgent")
            info = standalone.status(conductor_stack.settings)
            gate.write_text("open")
            runs = await _wait_final(client, [r.id for r in [*blockers, *waiting, urgent]])
            return runs, info.busy_slots, info.queued

    runs, busy, queued = asyncio.run(go())
    assert all(r.state is not None and r.state.is_completed() for r in runs)
    assert busy == 2 and queued == 4
    records = {r["label"]: r for r in _records(log)}
    assert len(records) == 6
    # Never more than the two agent slots at once, and both were used.
    assert _max_overlap(list(records.values())) == 2
    # With both slots busy, the urgent run was queued last but got one of the first two slots
    # that freed up (first-in-first-out would have started it last, after all three normals;
    # the two runs handed out together start in either order).
    normal_starts = sorted(records[f"normal-{i}"]["start"] for i in range(3))
    assert records["urgent"]["start"] < normal_starts[1]
    # The flow run imported the installed package, ran in a temp dir (nothing copied from
    # the worker's cwd), and saw the Conductor home and the ANTHROPIC_* variable.
    sample = records["urgent"]
    assert sample["conductor_file"].endswith("claude_conductor/__init__.py")
    assert sample["conductor_home"] == str(conductor_stack.home)
    assert sample["anthropic_probe"] == PROBE_VALUE
    assert sample["cwd"].endswith("prefect") and "sentinel.txt" not in sample["cwd_entries"]


def test_scale_agents_applies_live_and_persists(conductor_stack: Stack) -> None:
    settings = conductor_stack.settings
    result = standalone.scale_agents(settings, 3)
    assert result.applied_live
    assert standalone.status(settings).agents == 3
    config = (settings.home / "config.yaml").read_text()
    assert "agents: 3" in config
    standalone.scale_agents(settings, 2)
    assert standalone.status(settings).agents == 2


@pytest.mark.parametrize("agents", [0, -1])
def test_scale_agents_refuses_no_slots(conductor_stack: Stack, agents: int) -> None:
    with pytest.raises(InputError) as caught:
        standalone.scale_agents(conductor_stack.settings, agents)
    assert caught.value.exit_code == 2
    assert f"got {agents}" in str(caught.value)
    assert standalone.status(conductor_stack.settings).agents == 2


def test_up_adds_the_dashboard_and_the_offline_model(conductor_stack: Stack) -> None:
    settings = conductor_stack.settings.model_copy(
        update={
            "dashboard": conductor_stack.settings.dashboard.model_copy(update={"port": free_port()})
        }
    )
    before = standalone.status(settings).pids
    info = standalone.up(settings, dashboard=True, offline_model=True, base_env=conductor_stack.env)
    # Only what was missing started; idle workers were restarted to point at the model.
    assert set(info.started) == {
        addons.DASHBOARD,
        addons.SCRIPTED_MODEL,
        launch.AGENT_WORKER,
        launch.COORDINATOR_WORKER,
    }
    assert info.pids[launch.SERVER] == before[launch.SERVER]
    assert info.dashboard_url and processes.http_ok(info.dashboard_url + "/_stcore/health")
    model_url = addons.scripted_model_url(settings)
    assert model_url
    worker_env = processes.read_environ(info.pids[launch.AGENT_WORKER])
    assert worker_env["ANTHROPIC_BASE_URL"] == model_url
    # A later plain `up` without credentials keeps the model (nothing to switch to).
    env = {k: v for k, v in conductor_stack.env.items() if not k.startswith("ANTHROPIC_API")}
    again = standalone.up(settings, base_env=env)
    assert again.started == []


def test_down_stops_everything_and_up_keeps_history(conductor_stack: Stack) -> None:
    """Keep last: takes the shared stack down and brings it back."""
    settings = conductor_stack.settings

    async def start_long_run() -> tuple[UUID, list[UUID]]:
        async with conductor_client(settings) as client:
            old = [r.id for r in await client.read_flow_runs()]
            run = await _submit(client, SLEEPY.full_name, {"label": "long", "sleep_seconds": 300})
            await _wait_running(client, [run.id], 1)
            return run.id, old

    long_id, history = asyncio.run(start_long_run())
    assert history, "earlier tests left no runs to look for"
    pids = standalone.status(settings).pids
    stopped = standalone.down(settings, grace_seconds=5)
    names = {s.name for s in stopped}
    assert {launch.SERVER, launch.AGENT_WORKER, launch.COORDINATOR_WORKER, "flow-run"} <= names
    assert not any(processes.pid_alive(pid) for pid in pids.values())
    assert _stack_processes(settings.home) == []
    assert not list(settings.run_dir.glob("*.pid"))
    assert not standalone.status(settings).healthy

    info = standalone.up(settings, base_env=conductor_stack.env)
    assert launch.SERVER in info.started

    async def check() -> tuple[set[UUID], FlowRun]:
        async with conductor_client(settings) as client:
            ids = {r.id for r in await client.read_flow_runs(limit=200)}
            return ids, await client.read_flow_run(long_id)

    ids, long_run = asyncio.run(check())
    assert set(history) <= ids
    assert long_run.state is not None and long_run.state.is_crashed()


def test_up_refuses_a_port_taken_by_someone_else(tmp_path: Path) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        settings = make_settings(tmp_path / "home", sock.getsockname()[1])
        with pytest.raises(Exception, match="in use by a process Conductor did not start"):
            standalone.up(settings, timeout_seconds=10)
    assert not list(settings.run_dir.glob("*.pid"))


def test_a_server_that_exits_while_starting_is_reported_at_once_with_its_reason(
    tmp_path: Path,
) -> None:
    import socket
    import time

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))  # held, not listening: the server cannot bind it
        settings = make_settings(tmp_path / "home", sock.getsockname()[1])
        started = time.monotonic()
        with pytest.raises(Exception, match="exited while starting") as raised:
            standalone.up(settings, timeout_seconds=60)
        took = time.monotonic() - started
    assert "already in use" in str(raised.value)  # the server's own words, from its log
    assert took < 30, took  # not the whole timeout
    assert not list(settings.run_dir.glob("*.pid"))


def test_a_run_cut_off_by_a_hard_stop_is_crashed_at_the_next_up(tmp_path: Path) -> None:
    """Everything killed at once (a crash, the OOM killer, a reboot): no process is left to
    report on the run in flight, so the next `up` marks it Crashed, saying what happened,
    instead of leaving it Running forever. Queued work and history stay."""
    settings = make_settings(tmp_path / "home", free_port())
    env = stack_env()
    try:
        standalone.up(settings, base_env=env, timeout_seconds=180)
        register_deployments(settings, (SLEEPY,))

        async def start() -> UUID:
            async with conductor_client(settings) as client:
                run = await _submit(
                    client, SLEEPY.full_name, {"label": "cut", "sleep_seconds": 300}
                )
                await _wait_running(client, [run.id], 1)
                return run.id

        run_id = asyncio.run(start())
        victims = _stack_processes(settings.home)
        assert len(victims) >= 4  # server, worker, forkserver, the flow run
        for pid in victims:  # all of them at once, no chance to report
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30  # SIGKILL is delivered, not instantaneous
        while any(processes.pid_alive(pid) for pid in victims):
            assert time.monotonic() < deadline, [p for p in victims if processes.pid_alive(p)]
            time.sleep(0.1)
        assert not standalone.status(settings).healthy

        standalone.up(settings, base_env=env, timeout_seconds=180)

        async def read() -> FlowRun:
            async with conductor_client(settings) as client:
                return await client.read_flow_run(run_id)

        run = asyncio.run(read())
        assert run.state is not None and run.state.is_crashed(), run.state
        assert "without `conductor down`" in (run.state.message or "")
    finally:
        standalone.down(settings, grace_seconds=5)
    assert _stack_processes(settings.home) == []


def test_simultaneous_submissions_are_all_accepted(conductor_stack: Stack) -> None:
    """20 flow runs created at the same instant (no client retry): SQLite writers queue for
    the lock (tiers/prefect_server.py) instead of being refused with 503."""

    async def go() -> tuple[list[int], list[FlowRun]]:
        async with conductor_client(conductor_stack.settings) as client:
            deployment = await client.read_deployment_by_name(SLEEPY.full_name)
            url = (
                f"{conductor_stack.settings.server.url}/deployments/{deployment.id}/create_flow_run"
            )
            body = {"parameters": {"spec": {"label": "at-once", "sleep_seconds": 0}}}
            async with httpx.AsyncClient(timeout=120, trust_env=False) as http:
                answers = await asyncio.gather(*(http.post(url, json=body) for _ in range(20)))
            ids = [UUID(a.json()["id"]) for a in answers if a.is_success]
            return [a.status_code for a in answers], await _wait_final(client, ids, 300)

    codes, runs = asyncio.run(go())
    assert codes == [201] * 20, codes
    assert all(r.state is not None and r.state.is_completed() for r in runs)


def test_status_from_the_command_line_reads_the_live_stack_without_importing_prefect(
    conductor_stack: Stack,
) -> None:
    """``conductor status`` is typed often and while the machine is busy: it reads the API
    with plain HTTP (importing Prefect's client alone costs about a second of CPU)."""
    settings = conductor_stack.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDUCTOR_", "PREFECT_"))}
    env |= {
        "CONDUCTOR_HOME": str(settings.home),
        "CONDUCTOR_SERVER__PORT": str(settings.server.port),
        "PYTHONPROFILEIMPORTTIME": "1",
    }
    out = subprocess.run(
        [sys.executable, "-m", "claude_conductor.cli.main", "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    info = json.loads(out.stdout)
    assert info["healthy"] and info["agents"] == 2
    assert {p["name"] for p in info["pools"]} == {
        settings.worker.pool,
        settings.worker.coordinator_pool,
    }
    assert all(p["workers_online"] >= 1 for p in info["pools"])
    assert "conductor-task/run" in info["deployments"]
    imported = [line.split("|")[-1].strip() for line in out.stderr.splitlines()]
    assert not [m for m in imported if m == "prefect" or m.startswith("prefect.")]
