"""Test-only flows the stack's real worker runs (imported by module path, the way it imports
Conductor's own flows; the stack fixture puts this directory on the workers' PYTHONPATH).

``sleepy`` records when it really ran (wall clock, from inside the flow-run process) in a
JSON-lines file, so a test can compute how many runs overlapped without relying on polling.
With ``gate`` set it holds its slot until that file exists, so a test decides when it ends.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from prefect import flow


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
    log = spec.get("log")
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
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
