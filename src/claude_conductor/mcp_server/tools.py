"""What the MCP server's tools do, as plain async functions over ``client/`` (the CLI's and
the dashboard's client side): each takes the settings and its arguments and returns JSON-ready
data. Bad input raises ``InputError`` naming the field, as every other door does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun

from claude_conductor.client import schedules as schedule_api
from claude_conductor.client import tasks as api
from claude_conductor.client.diffs import read_task_diff
from claude_conductor.client.submission import check_sources, spec_from_fields
from claude_conductor.errors import InputError
from claude_conductor.flows.identity import task_id_of
from claude_conductor.flows.results import read_results
from claude_conductor.models import TaskResult
from claude_conductor.settings import ConductorSettings

__all__ = [
    "MAX_DIFF_CHARS",
    "MAX_WAIT_SECONDS",
    "cancel",
    "diff",
    "list_schedules",
    "list_tasks",
    "logs",
    "retry",
    "show",
    "submit",
    "task_summary",
]

MAX_WAIT_SECONDS = 600.0
"""Longest a tool waits for a task (MCP clients time tool calls out)."""
MAX_DIFF_CHARS = 200_000
"""Longest diff returned at once; the rest is on the task's branch."""
MAX_LOG_LINES = 1000
_POLL_SECONDS = 0.5


def _bounded_wait(value: float, field: str) -> float:
    if not 0 <= value <= MAX_WAIT_SECONDS:
        raise InputError(
            f"field {field!r} = {value!r}: must be from 0 to {MAX_WAIT_SECONDS:g} seconds",
            field=field,
            value=value,
        )
    return value


def task_summary(run: FlowRun, result: TaskResult | None) -> dict[str, Any]:
    """A task as an agent reads it: ids, state, and once it ended, its outcome."""
    spec = (run.parameters or {}).get("spec") or {}
    state = run.state
    out: dict[str, Any] = {
        "task_id": task_id_of(run),
        "flow_run_id": str(run.id),
        "state": state.name if state else None,
        "finished": bool(state and state.is_final()),
        "kind": spec.get("kind"),
        "title": (result.title if result else "") or spec.get("title") or "",
        "repo": spec.get("repo"),
    }
    if result is not None:
        out.update(
            status=result.status.value,
            branch=result.branch,
            files_changed=list(result.files_changed),
            cost_usd=result.cost_usd,
            turns=result.num_turns,
            duration_seconds=result.duration_seconds,
            summary=result.summary,
            error=result.error,
        )
    return out


async def _wait(client: PrefectClient, run: FlowRun, wait_seconds: float) -> FlowRun:
    if wait_seconds <= 0 or (run.state is not None and run.state.is_final()):
        return run
    return await api.wait_for_run(
        client, run.id, poll_seconds=_POLL_SECONDS, timeout_seconds=wait_seconds
    )


async def submit(
    settings: ConductorSettings, fields: Mapping[str, Any], *, cwd: Path, wait_seconds: float
) -> dict[str, Any]:
    """Validate the task like a task file (relative repositories from ``cwd``), check its
    repositories, submit it; with ``wait_seconds`` follow it up to that long."""
    _bounded_wait(wait_seconds, "wait_seconds")
    spec = spec_from_fields(fields, base=cwd, source="submit_task")
    await asyncio.to_thread(check_sources, spec)
    async with api.api_client(settings) as client:
        run = await api.submit_task(client, spec)
        run = await _wait(client, run, wait_seconds)
        result = await api.task_result(client, run) if run.state and run.state.is_final() else None
    return task_summary(run, result)


async def list_tasks(settings: ConductorSettings, *, limit: int) -> list[dict[str, Any]]:
    if not 1 <= limit <= 200:
        raise InputError(f"field 'limit' = {limit!r}: must be from 1 to 200", field="limit")
    async with api.api_client(settings) as client:
        runs = await api.list_runs(client, limit=limit)
        results = await read_results(client, [task_id_of(r) for r in runs])
    return [task_summary(r, results.get(task_id_of(r))) for r in runs]


async def show(settings: ConductorSettings, task_id: str, *, wait_seconds: float) -> dict[str, Any]:
    _bounded_wait(wait_seconds, "wait_seconds")
    async with api.api_client(settings) as client:
        run = await _wait(client, await api.find_run(client, task_id), wait_seconds)
        result = await api.task_result(client, run)
    return task_summary(run, result)


async def logs(
    settings: ConductorSettings, task_id: str, *, offset: int, limit: int, wait_seconds: float
) -> dict[str, Any]:
    """Log lines from ``offset`` on; with ``wait_seconds``, wait that long for a new line (or
    the end). Call again with ``next_offset`` to follow a task. ``finished`` means no line will
    follow: a run that has just ended is waited for (a few seconds at most) until its last
    line is in."""
    _bounded_wait(wait_seconds, "wait_seconds")
    if offset < 0:
        raise InputError(f"field 'offset' = {offset!r}: must be 0 or more", field="offset")
    if not 1 <= limit <= MAX_LOG_LINES:
        raise InputError(
            f"field 'limit' = {limit!r}: must be from 1 to {MAX_LOG_LINES}", field="limit"
        )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    async with api.api_client(settings) as client:
        run = await api.find_run(client, task_id)
        while True:
            entries = await api.read_task_logs(client, run, limit=offset + limit)
            fresh = entries[offset:]
            full = len(entries) >= offset + limit  # more lines may be there already
            finished = not full and api.logs_complete(run, entries)
            ending = bool(run.state and run.state.is_final()) and not finished and not full
            if not ending and (fresh or finished or loop.time() >= deadline):
                break
            await asyncio.sleep(_POLL_SECONDS)
            run = await client.read_flow_run(run.id)
    return {
        "task_id": task_id_of(run),
        "state": run.state.name if run.state else None,
        "finished": finished,
        "lines": [f"{e.timestamp:%H:%M:%S} {e.message}" for e in fresh],
        "next_offset": offset + len(fresh),
    }


async def diff(settings: ConductorSettings, task_id: str) -> dict[str, Any]:
    """The patch of a finished task (what its branch changed)."""
    async with api.api_client(settings) as client:
        run = await api.find_run(client, task_id)
        result = await api.task_result(client, run)
        if result is None:
            state = run.state.name if run.state else "unknown"
            raise InputError(
                f"task {task_id!r} has no result yet ({state}); wait for it with show_task "
                "and wait_seconds, then ask again",
                field="task_id",
                value=task_id,
            )
        text = await read_task_diff(client, result)
    truncated = len(text) > MAX_DIFF_CHARS
    return {
        "task_id": result.task_id,
        "branch": result.branch,
        "base_commit": result.base_commit,
        "head_commit": result.head_commit,
        "files_changed": list(result.files_changed),
        "diff": text[:MAX_DIFF_CHARS],
        "truncated": truncated,
    }


async def cancel(settings: ConductorSettings, task_id: str) -> dict[str, Any]:
    async with api.api_client(settings) as client:
        run = await api.cancel_task(client, task_id)
    return task_summary(run, None)


async def retry(settings: ConductorSettings, task_id: str) -> dict[str, Any]:
    async with api.api_client(settings) as client:
        spec, run = await api.retry_task(client, task_id)
    return {**task_summary(run, None), "task_id": spec.id, "retry_of": task_id}


async def list_schedules(settings: ConductorSettings) -> list[dict[str, Any]]:
    async with api.api_client(settings) as client:
        infos = await schedule_api.list_schedules(client)
    return [i.model_dump(mode="json") for i in infos]
