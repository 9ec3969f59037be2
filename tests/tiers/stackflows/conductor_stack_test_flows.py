"""Test-only flows the stack's real worker runs (imported by module path, the way it imports
Conductor's own flows; the stack fixture puts this directory on the workers' PYTHONPATH).

``sleepy`` records when it really ran (wall clock, from inside the flow-run process) in a
JSON-lines file, so a test can compute how many runs overlapped without relying on polling.
With ``gate`` set it holds its slot until that file exists, so a test decides when it ends;
with ``steps`` it then runs that many small Prefect tasks, 0.1 s apart (each one a point where
the engine honours a suspension), recording each.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE


def _argv(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [a.decode() for a in fh.read().split(b"\0") if a]
    except OSError:
        return []


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _append(path: str | None, record: dict[str, Any]) -> None:
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


@task(name="conductor-stack-test-step", cache_policy=NO_CACHE)
async def _step(n: int, log: str | None) -> int:
    _append(log, {"step": n})
    return n


@flow(name="conductor-stack-test-sleep", persist_result=False)
async def sleepy(spec: dict[str, Any]) -> dict[str, Any]:
    started = time.time()
    gate = spec.get("gate")
    if gate:  # hold the slot until the test opens the gate (bounded by sleep_seconds)
        deadline = started + float(spec.get("sleep_seconds", 60))
        while not os.path.exists(gate) and time.time() < deadline:
            await asyncio.sleep(0.05)
    else:
        await asyncio.sleep(float(spec.get("sleep_seconds", 1)))
    for n in range(int(spec.get("steps", 0))):
        await _step(n, spec.get("log"))
        await asyncio.sleep(0.1)
    finished = time.time()
    from prefect.settings import get_current_settings

    import claude_conductor

    record = {
        "label": spec.get("label"),
        "start": started,
        "end": finished,
        "pid": os.getpid(),
        "parent_argv": _argv(os.getppid()),
        "parent_name": _name(os.getppid()),
        "conductor_file": claude_conductor.__file__,
        "cwd": os.getcwd(),
        "cwd_entries": sorted(os.listdir()),
        "conductor_home": os.environ.get("CONDUCTOR_HOME"),
        "anthropic_probe": os.environ.get("ANTHROPIC_STACK_TEST_PROBE"),
        "client_max_retries": get_current_settings().client.max_retries,
    }
    _append(spec.get("log"), record)
    return record


@flow(name="conductor-stack-test-chatty", persist_result=False)
async def chatty(spec: dict[str, Any]) -> int:
    """Logs ``lines`` numbered lines and returns at once (or fails at once, with ``fail``):
    every one must reach the API."""
    from prefect import get_run_logger

    logger = get_run_logger()
    lines = int(spec.get("lines", 50))
    for n in range(lines):
        logger.info("chatty line %d of %d", n + 1, lines)
    if spec.get("fail"):
        raise RuntimeError("chatty failed on purpose")
    return lines
