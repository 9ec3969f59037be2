"""The conductor worker on a real standalone stack (the shared ``conductor_stack``): runs are
forked from its warm forkserver, which is replaced when it dies and restarted when the code it
loaded changes (edited or reinstalled with pip); when no forkserver can be had runs still
start, with Prefect's stock starter; a run that ends right after logging loses none of its
lines."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.objects import FlowRun
from prefect.states import Suspended
from prefect.utilities.engine import propose_state

from claude_conductor.client.connection import conductor_client
from claude_conductor.system import processes
from claude_conductor.tiers.standalone import launch
from claude_conductor.work_pools.forkserver import PROCESS_NAMES
from stack_fixtures import (
    CHATTY,
    SLEEPY,
    VERSIONED,
    VERSIONED_SOURCE,
    WHEELED,
    Stack,
    build_wheel,
    pip_install,
)

pytestmark = pytest.mark.integration

T = TypeVar("T")


def _wait(predicate: Callable[[], T], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def _run(
    client: PrefectClient,
    deployment: str,
    spec: dict[str, Any],
    timeout: float = 120,
    job_variables: dict[str, Any] | None = None,
) -> FlowRun:
    dep = await client.read_deployment_by_name(deployment)
    run = await client.create_flow_run_from_deployment(
        dep.id, parameters={"spec": spec}, job_variables=job_variables
    )
    deadline = time.monotonic() + timeout
    while True:
        run = await client.read_flow_run(run.id)
        if run.state is not None and run.state.is_final():
            return run
        assert time.monotonic() < deadline, f"run still {run.state.name if run.state else None}"
        await asyncio.sleep(0.1)


def _forkserver_pid(stack: Stack) -> int | None:
    worker = processes.read_daemon(stack.settings, launch.WORKER)
    assert worker is not None and worker.alive
    for child in psutil.Process(worker.pid).children():
        try:
            if child.name() == PROCESS_NAMES["forkserver"]:
                return child.pid
        except psutil.Error:
            continue
    return None


def test_runs_are_forked_from_the_warm_forkserver(conductor_stack: Stack) -> None:
    forkserver = _wait(lambda: _forkserver_pid(conductor_stack), 60, "the forkserver")

    async def go() -> FlowRun:
        async with conductor_client(conductor_stack.settings) as client:
            return await _run(client, SLEEPY.full_name, {"label": "forked", "sleep_seconds": 0})

    run = asyncio.run(go())
    assert run.state is not None and run.state.is_completed(), run.state
    host, _, pid = (run.infrastructure_pid or "").rpartition(":")
    assert host and pid.isdigit(), run.infrastructure_pid
    # The engine's process ends (reaped by its supervisor, a child of the forkserver) ...
    _wait(lambda: not processes.pid_alive(int(pid)), 30, "the engine to exit")
    # ... and the forkserver that forked it is still the same, warm one.
    assert _forkserver_pid(conductor_stack) == forkserver


def test_a_run_suspended_from_outside_stops_at_its_next_task(
    conductor_stack: Stack, tmp_path: Path
) -> None:
    """Prefect's suspension of a running deployment run (what ``suspend_flow_run(flow_run_id=
    ...)`` and the UI do) reaches a forked run: it stops at its next task, stays Suspended, and
    its engine exits (freeing the slot)."""
    gate, log = tmp_path / "gate", tmp_path / "steps.jsonl"
    spec = {"label": "suspended", "gate": str(gate), "sleep_seconds": 60, "steps": 300}

    async def go() -> tuple[FlowRun, float]:
        async with conductor_client(conductor_stack.settings) as client:
            dep = await client.read_deployment_by_name(SLEEPY.full_name)
            run = await client.create_flow_run_from_deployment(
                dep.id, parameters={"spec": {**spec, "log": str(log)}}
            )
            deadline = time.monotonic() + 60
            while not (run.state and run.state.is_running() and run.infrastructure_pid):
                assert time.monotonic() < deadline, f"run still {run.state}"
                await asyncio.sleep(0.1)
                run = await client.read_flow_run(run.id)
            state = await propose_state(
                client, Suspended(timeout_seconds=600, pause_key="test"), flow_run_id=run.id
            )
            assert state.is_paused(), state
            gate.touch()
            opened = time.monotonic()
            pid = int(run.infrastructure_pid.rpartition(":")[2])
            await asyncio.to_thread(
                _wait, lambda: not processes.pid_alive(pid), 30, "the engine to exit"
            )
            return await client.read_flow_run(run.id), time.monotonic() - opened

    run, took = asyncio.run(go())
    assert run.state is not None and run.state.is_paused(), run.state
    assert run.state.name == "Suspended", run.state
    steps = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    # It stopped at one of its next tasks, long before its 300 (30 s), however busy the machine.
    assert len(steps) < 100, f"{len(steps)} tasks ran after the suspension"
    assert took < 15, f"the engine exited {took:.1f}s after the gate opened"


def test_a_forked_runs_events_name_its_flow_deployment_queue_and_pool(
    conductor_stack: Stack, tmp_path: Path
) -> None:
    """What the worker hands over for the run's events (``work_pools.related``) is what the
    events carry: the run's task-run events are related to its flow, deployment, work queue
    and work pool, by name."""
    import httpx

    async def go() -> tuple[FlowRun, list[dict[str, Any]]]:
        async with conductor_client(conductor_stack.settings) as client:
            run = await _run(
                client, SLEEPY.full_name, {"label": "events", "sleep_seconds": 0, "steps": 1}
            )
            body = {
                "filter": {
                    "event": {"prefix": ["prefect.task-run."]},
                    "related": {"id": [f"prefect.flow-run.{run.id}"]},
                },
                "limit": 50,
            }
            url = f"{conductor_stack.settings.server.url}/events/filter"
            deadline = time.monotonic() + 30
            async with httpx.AsyncClient(timeout=10) as http:
                while True:  # events are written a moment after they are sent
                    events = (await http.post(url, json=body)).json()["events"]
                    if any(e["event"] == "prefect.task-run.Completed" for e in events):
                        return run, events
                    assert time.monotonic() < deadline, events
                    await asyncio.sleep(0.5)

    run, events = asyncio.run(go())
    completed = next(e for e in events if e["event"] == "prefect.task-run.Completed")
    names = {
        r["prefect.resource.role"]: r.get("prefect.resource.name") for r in completed["related"]
    }
    assert names["flow"] == "conductor-stack-test-sleep", names
    assert names["deployment"] == "run", names
    assert names["work-pool"] == conductor_stack.settings.worker.pool, names
    assert names["work-queue"] == run.work_queue_name, names
    assert names["flow-run"] == run.name, names


def test_a_run_gets_the_prefect_settings_of_its_own_environment(
    conductor_stack: Stack, tmp_path: Path
) -> None:
    """The forkserver builds Prefect's settings once per distinct environment and forks runs
    with them: a run whose job variables set a Prefect setting sees it, and the next run
    without it sees the default again."""
    log = tmp_path / "runs.jsonl"

    async def go() -> list[FlowRun]:
        async with conductor_client(conductor_stack.settings) as client:
            spec = {"sleep_seconds": 0, "log": str(log)}
            own = {"env": {"PREFECT_CLIENT_MAX_RETRIES": "9"}}
            return [
                await _run(client, SLEEPY.full_name, {**spec, "label": "default"}),
                await _run(client, SLEEPY.full_name, {**spec, "label": "own"}, job_variables=own),
                await _run(client, SLEEPY.full_name, {**spec, "label": "default-again"}),
            ]

    runs = asyncio.run(go())
    assert all(r.state is not None and r.state.is_completed() for r in runs)
    seen = {
        r["label"]: r["client_max_retries"] for r in map(json.loads, log.read_text().splitlines())
    }
    assert seen == {"default": 5, "own": 9, "default-again": 5}


async def _all_logs(client: PrefectClient, run_id: Any) -> list[str]:
    messages: list[str] = []
    while True:
        page = await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
            offset=len(messages),
            limit=200,
        )
        messages += [log.message for log in page]
        if len(page) < 200:
            return messages


def _chatty_run(stack: Stack, spec: dict[str, Any]) -> tuple[FlowRun, list[str]]:
    """A run of the chatty flow, and its logs read the moment it is seen final."""

    async def go() -> tuple[FlowRun, list[str]]:
        async with conductor_client(stack.settings) as client:
            run = await _run(client, CHATTY.full_name, spec)
            # Read at once: a run's lines are in the API before it reports its final state
            # (Prefect's own engine sends its last batch after it, as its process exits).
            return run, await _all_logs(client, run.id)

    return asyncio.run(go())


def test_logs_of_a_run_that_ends_right_after_logging_all_reach_the_api(
    conductor_stack: Stack,
) -> None:
    run, messages = _chatty_run(conductor_stack, {"lines": 200})
    assert run.state is not None and run.state.is_completed(), run.state
    lines = [m for m in messages if m.startswith("chatty line ")]
    assert len(lines) == 200, f"{len(lines)} of 200 lines were in the API when the run ended"
    assert "chatty line 200 of 200" in lines


def test_a_failed_run_has_its_lines_and_its_error_in_the_api_when_it_ends(
    conductor_stack: Stack,
) -> None:
    run, messages = _chatty_run(conductor_stack, {"lines": 20, "fail": True})
    assert run.state is not None and run.state.is_failed(), run.state
    assert sum(m.startswith("chatty line ") for m in messages) == 20, messages
    assert any("chatty failed on purpose" in m for m in messages), messages


def test_a_code_change_is_picked_up_by_the_next_run(conductor_stack: Stack) -> None:
    assert conductor_stack.code_dir is not None
    module = conductor_stack.code_dir / "conductor_stack_versioned.py"

    async def version() -> str | None:
        async with conductor_client(conductor_stack.settings) as client:
            run = await _run(client, VERSIONED.full_name, {})
            assert run.state is not None and run.state.is_completed(), run.state
            return run.state.message

    before = _wait(lambda: _forkserver_pid(conductor_stack), 60, "the forkserver")
    assert asyncio.run(version()) == "version 1"
    module.write_text(VERSIONED_SOURCE.format(version=2))  # the module the forkserver preloaded
    os.utime(module, (time.time() + 5, time.time() + 5))  # a new mtime even on a coarse clock
    assert asyncio.run(version()) == "version 2"
    after = _forkserver_pid(conductor_stack)
    assert after is not None and after != before


def test_a_forkserver_killed_from_outside_is_replaced(conductor_stack: Stack) -> None:
    old = _wait(lambda: _forkserver_pid(conductor_stack), 60, "the forkserver")
    os.kill(old, signal.SIGKILL)
    new = _wait(
        lambda: (pid := _forkserver_pid(conductor_stack)) is not None and pid != old and pid,
        60,
        "a new forkserver",
    )

    async def go() -> FlowRun:
        async with conductor_client(conductor_stack.settings) as client:
            return await _run(client, SLEEPY.full_name, {"label": "after", "sleep_seconds": 0})

    run = asyncio.run(go())
    assert run.state is not None and run.state.is_completed(), run.state
    assert _forkserver_pid(conductor_stack) == new
    assert not processes.pid_alive(old)


def test_a_reinstalled_package_is_picked_up_by_the_next_run(
    conductor_stack: Stack, tmp_path: Path
) -> None:
    assert conductor_stack.site_dir is not None

    async def version() -> str | None:
        async with conductor_client(conductor_stack.settings) as client:
            run = await _run(client, WHEELED.full_name, {})
            assert run.state is not None and run.state.is_completed(), run.state
            return run.state.message

    before = _wait(lambda: _forkserver_pid(conductor_stack), 60, "the forkserver")
    assert asyncio.run(version()) == "installed version 1"
    pip_install(conductor_stack.site_dir, build_wheel(tmp_path, 2))  # what `pip install -U` does
    assert asyncio.run(version()) == "installed version 2"
    after = _forkserver_pid(conductor_stack)
    assert after is not None and after != before


def _sleepy_run(stack: Stack, tmp_path: Path, label: str) -> dict[str, Any]:
    """A run of the test flow; what it recorded about its own process."""
    log = tmp_path / f"{label}.jsonl"

    async def go() -> FlowRun:
        async with conductor_client(stack.settings) as client:
            spec = {"label": label, "sleep_seconds": 0, "log": str(log)}
            return await _run(client, SLEEPY.full_name, spec)

    run = asyncio.run(go())
    assert run.state is not None and run.state.is_completed(), run.state
    record: dict[str, Any] = json.loads(log.read_text().splitlines()[-1])
    return record


def test_without_a_forkserver_runs_use_the_stock_starter(
    conductor_stack: Stack, tmp_path: Path
) -> None:
    assert conductor_stack.code_dir is not None
    worker = processes.read_daemon(conductor_stack.settings, launch.WORKER)
    assert worker is not None
    module = conductor_stack.code_dir / "conductor_stack_versioned.py"
    healthy = module.read_text()
    old = _wait(lambda: _forkserver_pid(conductor_stack), 60, "the forkserver")
    # A preloaded module that kills the process importing it: no new forkserver can start.
    module.write_text("import os\nos._exit(3)\n")
    os.utime(module, (time.time() + 10, time.time() + 10))
    try:
        record = _sleepy_run(conductor_stack, tmp_path, "stock")
        # Prefect's own starter (a new process of the worker's), not a fork of the forkserver.
        assert record["parent_name"] != PROCESS_NAMES["supervisor"], record
        assert record["parent_name"] not in PROCESS_NAMES.values(), record
        log = worker.log_path.read_text(encoding="utf-8", errors="replace")
        assert "the stock starter is used" in log
    finally:
        module.write_text(healthy)
        os.utime(module, (time.time() + 20, time.time() + 20))
    time.sleep(1.0)  # past the worker's first back-off (0.5 s) before it tries again
    # Once the code imports again, the next run is forked again, from a new forkserver.
    record = _sleepy_run(conductor_stack, tmp_path, "forked-again")
    assert record["parent_name"] == PROCESS_NAMES["supervisor"], record
    assert _forkserver_pid(conductor_stack) not in (None, old)
