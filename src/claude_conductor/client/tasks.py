"""Talking to the Prefect API about conductor tasks: submit, find, follow, cancel, retry, read
logs. Used by the CLI and the dashboard; every function takes the settings it needs.

A task is a flow run named by the task id and tagged ``conductor``; its result is an artifact
(see ``results``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterName,
    FlowRunFilterTags,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import FlowRun, Log
from prefect.client.schemas.sorting import FlowRunSort, LogSort
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings
from prefect.states import Cancelling

from claude_conductor.errors import InputError, NotFoundError, ServerNotRunningError
from claude_conductor.flows.fanout import submission_tags
from claude_conductor.flows.results import read_result
from claude_conductor.models import TaskResult, TaskSpec
from claude_conductor.settings import ConductorSettings

__all__ = [
    "FANOUT_DEPLOYMENT",
    "TASK_DEPLOYMENT",
    "api_client",
    "cancel_task",
    "find_run",
    "list_runs",
    "read_task_logs",
    "retry_task",
    "submit_task",
    "task_result",
    "wait_for_run",
]

TASK_DEPLOYMENT = "conductor-task/run"
_PAGE = 200  # the most Prefect's read endpoints return at once
FANOUT_DEPLOYMENT = "conductor-fanout/run"


def _queue_for(priority: int) -> str | None:
    try:
        from claude_conductor.work_pools.pools import queue_for_priority
    except ImportError:  # pools not installed in this build
        return None
    return queue_for_priority(priority)


@contextlib.asynccontextmanager
async def api_client(settings: ConductorSettings) -> AsyncIterator[PrefectClient]:
    """A Prefect client on the configured API; ServerNotRunningError when it does not answer."""
    updates: dict[Any, Any] = {PREFECT_API_URL: settings.server.url}
    auth = settings.server.auth_string
    if auth is not None:
        updates[PREFECT_API_AUTH_STRING] = auth.get_secret_value()
    await _check_reachable(settings)
    with temporary_settings(updates=updates):
        async with get_client() as client:
            yield client


async def _check_reachable(settings: ConductorSettings, timeout_seconds: float = 3.0) -> None:
    """Fail fast (no client retries) when nothing answers the API's health endpoint."""
    import httpx

    url = settings.server.url.rstrip("/") + "/health"
    try:
        async with httpx.AsyncClient(timeout=timeout_seconds) as http:
            response = await http.get(url)
    except httpx.HTTPError as exc:
        raise ServerNotRunningError(settings.server.url) from exc
    if response.status_code >= 500:
        raise ServerNotRunningError(settings.server.url)


async def submit_task(client: PrefectClient, spec: TaskSpec) -> FlowRun:
    """Create the task's flow run on its deployment (fan-out when it has subtasks)."""
    name = FANOUT_DEPLOYMENT if spec.subtasks else TASK_DEPLOYMENT
    try:
        deployment = await client.read_deployment_by_name(name)
    except Exception as exc:
        if type(exc).__name__ != "ObjectNotFound":
            raise
        raise InputError(
            f"deployment {name!r} is not registered on {client.api_url}; "
            "run `conductor up` (or `prefect deploy --all`) first"
        ) from exc
    if spec.subtasks:
        # Resolve inheritance now: once serialized, every subtask field would count as set.
        spec = spec.model_copy(update={"subtasks": spec.expanded_subtasks()})
    return await client.create_flow_run_from_deployment(
        deployment.id,
        parameters={"spec": spec.model_dump(mode="json")},
        name=spec.id,
        tags=submission_tags(spec),
        work_queue_name=_queue_for(spec.priority),
        idempotency_key=spec.id,
    )


async def find_run(client: PrefectClient, task_id: str) -> FlowRun:
    """The flow run of a task id (or of a flow run id). NotFoundError when there is none."""
    with contextlib.suppress(ValueError):
        run = await client.read_flow_run(UUID(task_id))
        return run
    runs = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[task_id])),
        sort=FlowRunSort.EXPECTED_START_TIME_DESC,
        limit=1,
    )
    if not runs:
        raise NotFoundError(
            f"no task {task_id!r} on {client.api_url}; list tasks with `conductor tasks list`",
            field="task_id",
            value=task_id,
        )
    return runs[0]


async def list_runs(
    client: PrefectClient, *, limit: int = 50, tags: list[str] | None = None
) -> list[FlowRun]:
    """Conductor flow runs, newest first."""
    runs: list[FlowRun] = []
    while len(runs) < limit:
        page = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=["conductor", *(tags or [])])
            ),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=min(_PAGE, limit - len(runs)),
            offset=len(runs),
        )
        runs.extend(page)
        if len(page) < _PAGE:
            break
    return runs


async def wait_for_run(
    client: PrefectClient,
    run_id: UUID,
    *,
    poll_seconds: float = 0.5,
    on_change: Callable[[FlowRun], None] | None = None,
    timeout_seconds: float | None = None,
) -> FlowRun:
    """Poll a flow run until it is final, calling ``on_change`` when its state changes."""
    loop = asyncio.get_running_loop()
    deadline = None if timeout_seconds is None else loop.time() + timeout_seconds
    last: str | None = None
    while True:
        run = await client.read_flow_run(run_id)
        key = run.state.name if run.state else None
        if key != last and on_change is not None:
            on_change(run)
        last = key
        if run.state is not None and run.state.is_final():
            return run
        if deadline is not None and loop.time() > deadline:
            return run
        await asyncio.sleep(poll_seconds)


async def task_result(client: PrefectClient, run: FlowRun) -> TaskResult | None:
    return await read_result(client, run.name)


async def cancel_task(client: PrefectClient, task_id: str) -> FlowRun:
    """Ask Prefect to cancel a task's run (the worker stops its process)."""
    run = await find_run(client, task_id)
    if run.state is not None and run.state.is_final():
        raise InputError(
            f"task {task_id!r} already ended ({run.state.name}); nothing to cancel",
            field="task_id",
            value=task_id,
        )
    await client.set_flow_run_state(run.id, Cancelling(message="cancelled by the user"), force=True)
    return await client.read_flow_run(run.id)


async def retry_task(client: PrefectClient, task_id: str) -> tuple[TaskSpec, FlowRun]:
    """Submit a finished task again, as a new task with a fresh id and the same spec."""
    run = await find_run(client, task_id)
    if run.state is not None and not run.state.is_final():
        raise InputError(
            f"task {task_id!r} is still {run.state.name}; cancel it first or wait for it",
            field="task_id",
            value=task_id,
        )
    data = dict(run.parameters.get("spec") or {})
    data.pop("id", None)
    data["tags"] = [*data.get("tags", []), f"retry-of:{run.name}"]
    spec = TaskSpec.model_validate(data)
    return spec, await submit_task(client, spec)


async def read_task_logs(client: PrefectClient, run: FlowRun, *, limit: int = 1000) -> list[Log]:
    """The run's logs (agent events included, redacted), oldest first."""
    logs: list[Log] = []
    while len(logs) < limit:
        page = await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])),
            sort=LogSort.TIMESTAMP_ASC,
            limit=min(_PAGE, limit - len(logs)),
            offset=len(logs),
        )
        logs.extend(page)
        if len(page) < _PAGE:
            break
    return logs


def env_for_prefect(settings: ConductorSettings) -> dict[str, str]:
    """Environment that points Prefect clients (and subprocesses) at the configured API."""
    env = {"PREFECT_API_URL": settings.server.url}
    if settings.server.auth_string is not None:
        env["PREFECT_API_AUTH_STRING"] = settings.server.auth_string.get_secret_value()
    return {**os.environ, **env}
