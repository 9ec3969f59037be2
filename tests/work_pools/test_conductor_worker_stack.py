"""The conductor worker on a real standalone stack (the shared ``conductor_stack``): runs are
forked from its warm forkserver, which is replaced when it dies and restarted when the code it
loaded changes; a run that ends right after logging loses none of its lines."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psutil
import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.objects import FlowRun

from claude_conductor.client.connection import conductor_client
from claude_conductor.system import processes
from claude_conductor.tiers.standalone import launch
from stack_fixtures import CHATTY, SLEEPY, VERSIONED, VERSIONED_SOURCE, Stack

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
    client: PrefectClient, deployment: str, spec: dict[str, Any], timeout: float = 120
) -> FlowRun:
    dep = await client.read_deployment_by_name(deployment)
    run = await client.create_flow_run_from_deployment(dep.id, parameters={"spec": spec})
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
            if "claude_conductor.work_pools.forkserver" in " ".join(child.cmdline()):
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


def test_logs_of_a_run_that_ends_right_after_logging_all_reach_the_api(
    conductor_stack: Stack,
) -> None:
    async def go() -> list[str]:
        async with conductor_client(conductor_stack.settings) as client:
            run = await _run(client, CHATTY.full_name, {"lines": 200})
            assert run.state is not None and run.state.is_completed(), run.state
            messages: list[str] = []
            while True:
                page = await client.read_logs(
                    log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])),
                    offset=len(messages),
                    limit=200,
                )
                messages += [log.message for log in page]
                if len(page) < 200:
                    return messages

    messages = asyncio.run(go())
    lines = [m for m in messages if m.startswith("chatty line ")]
    assert len(lines) == 200, f"{len(lines)} of 200 lines reached the API"
    assert "chatty line 200 of 200" in lines


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
