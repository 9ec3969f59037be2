"""Talking to the Prefect API about conductor tasks: submit, find, follow, cancel, retry, read
logs. Used by the CLI and the dashboard; every function takes the settings it needs.

A task is a conductor flow run, whoever started it: its id, name and tags are defined in
``flows.identity`` (``task_id_of`` is the one answer to "which task is this run"); its result is
an artifact (see ``results``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID

import httpx
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    ArtifactCollectionFilter,
    ArtifactCollectionFilterKey,
    FlowRunFilter,
    FlowRunFilterName,
    FlowRunFilterTags,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import FlowRun, Log
from prefect.client.schemas.sorting import FlowRunSort, LogSort
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelling

from claude_conductor.client.connection import conductor_client
from claude_conductor.errors import InputError, NotFoundError
from claude_conductor.flows.identity import run_name, submission_tags, task_id_of, task_tag
from claude_conductor.flows.results import read_result, report_key
from claude_conductor.models import TaskResult, TaskSpec
from claude_conductor.settings import ConductorSettings
from claude_conductor.work_pools import deployments
from claude_conductor.work_pools.pools import queue_for_priority

__all__ = [
    "FANOUT_DEPLOYMENT",
    "TASK_DEPLOYMENT",
    "api_client",
    "cancel_task",
    "find_run",
    "list_runs",
    "logs_complete",
    "read_report",
    "read_task_logs",
    "retry_task",
    "submit_task",
    "task_id_of",
    "task_result",
    "wait_for_run",
]

TASK_DEPLOYMENT = deployments.TASK_DEPLOYMENT.full_name
FANOUT_DEPLOYMENT = deployments.FANOUT_DEPLOYMENT.full_name
_PAGE = 200  # the most Prefect's read endpoints return at once


def _queue_for(priority: int) -> str | None:
    return queue_for_priority(priority)


def api_client(
    settings: ConductorSettings,
) -> contextlib.AbstractAsyncContextManager[PrefectClient]:
    """A Prefect client on the configured API; ServerNotRunningError when it does not answer
    (``client.connection.conductor_client``)."""
    return conductor_client(settings)


# (API URL, deployment name) -> deployment id: a submission is then one request, not two.
_DEPLOYMENT_IDS: dict[tuple[str, str], UUID] = {}


async def _deployment_id(client: PrefectClient, name: str, *, fresh: bool = False) -> UUID:
    key = (str(client.api_url), name)
    if not fresh and key in _DEPLOYMENT_IDS:
        return _DEPLOYMENT_IDS[key]
    try:
        deployment = await client.read_deployment_by_name(name)
    except ObjectNotFound as exc:
        raise InputError(
            f"deployment {name!r} is not registered on {client.api_url}; "
            "run `conductor up` (or `prefect deploy --all`) first"
        ) from exc
    _DEPLOYMENT_IDS[key] = deployment.id
    return deployment.id


async def submit_task(client: PrefectClient, spec: TaskSpec) -> FlowRun:
    """Create the task's flow run on its deployment (fan-out when it has subtasks): one
    request once this process knows the deployment's id."""
    name = FANOUT_DEPLOYMENT if spec.subtasks else TASK_DEPLOYMENT
    if spec.subtasks:
        # Resolve inheritance now: once serialized, every subtask field would count as set.
        spec = spec.model_copy(update={"subtasks": spec.expanded_subtasks()})
    for fresh in (False, True):
        deployment_id = await _deployment_id(client, name, fresh=fresh)
        try:
            return await client.create_flow_run_from_deployment(
                deployment_id,
                parameters={"spec": spec.model_dump(mode="json")},
                name=run_name(spec),
                tags=submission_tags(spec),
                work_queue_name=_queue_for(spec.priority),
                idempotency_key=spec.id,
            )
        except (ObjectNotFound, httpx.HTTPStatusError) as exc:
            response = getattr(exc, "response", None)
            if fresh or (response is not None and response.status_code != 404):
                raise
            # The deployment was registered again (a new id): look it up once more.
    raise AssertionError("unreachable")


async def find_run(client: PrefectClient, task_id: str) -> FlowRun:
    """The flow run of a task id (or of a flow run id). NotFoundError when there is none.

    By its ``task:<id>`` tag (every conductor run has it from submission, or from its start
    when another client created it), else by name (runs from before the tag existed)."""
    with contextlib.suppress(ValueError):
        run = await client.read_flow_run(UUID(task_id))
        return run
    runs: list[FlowRun] = []
    for flow_run_filter in (
        FlowRunFilter(tags=FlowRunFilterTags(all_=[task_tag(task_id)])),
        FlowRunFilter(name=FlowRunFilterName(any_=[task_id])),
    ):
        runs = await client.read_flow_runs(
            flow_run_filter=flow_run_filter, sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=1
        )
        if runs:
            break
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
    """The run's published result (None until it has one)."""
    return await read_result(client, task_id_of(run))


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
    data["tags"] = [*data.get("tags", []), f"retry-of:{task_id_of(run)}"]
    spec = TaskSpec.model_validate(data)
    return spec, await submit_task(client, spec)


async def read_task_logs(
    client: PrefectClient, run: FlowRun, *, limit: int = 1000, newest: bool = False
) -> list[Log]:
    """The run's logs (agent events included, redacted), oldest first: its first ``limit``,
    or with ``newest`` its last ``limit`` (paged: at most 200 per request)."""
    logs: list[Log] = []
    while len(logs) < limit:
        page = await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])),
            sort=LogSort.TIMESTAMP_DESC if newest else LogSort.TIMESTAMP_ASC,
            limit=min(_PAGE, limit - len(logs)),
            offset=len(logs),
        )
        logs.extend(page)
        if len(page) < _PAGE:
            break
    return logs[::-1] if newest else logs


LOGS_SETTLE_SECONDS = 5.0
"""How long after a run's final state its logs are taken as complete without its engine's last
line (an engine killed outright never sends it)."""


def logs_complete(run: FlowRun, entries: list[Log]) -> bool:
    """Whether ``entries`` (the run's logs, oldest first) are all it will have: the run is final
    and Prefect's engine has logged its last line (the flow run's "Finished in state ...",
    which it logs, and sends, just after reporting that state), or the final state is
    ``LOGS_SETTLE_SECONDS`` old."""
    state = run.state
    if state is None or not state.is_final():
        return False
    for entry in reversed(entries[-20:]):
        if entry.name == "prefect.flow_runs" and entry.message.startswith("Finished in state"):
            return True
    age = (datetime.now(UTC) - state.timestamp).total_seconds()
    return age >= LOGS_SETTLE_SECONDS


async def read_report(client: PrefectClient, task_id: str) -> str:
    """The task's markdown report artifact ("" when it has none yet)."""
    found = await client.read_latest_artifacts(
        artifact_filter=ArtifactCollectionFilter(
            key=ArtifactCollectionFilterKey(any_=[report_key(task_id)])
        ),
        limit=1,
    )
    data = found[0].data if found else None
    return data if isinstance(data, str) else ""
