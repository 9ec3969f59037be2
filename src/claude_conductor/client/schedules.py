"""Schedules: a task that runs by itself on a cron or an interval, on Prefect's own deployment
schedules (the server's scheduler service creates the runs; Conductor runs no scheduler).

Each schedule is its own deployment of Conductor's flow (``conductor-task/<name>``, or
``conductor-fanout/<name>`` for a task with subtasks) on the agent pool, with the task as its
``spec`` parameter, the task's queue and tags plus ``scheduled``, and one Prefect schedule
(slug = the name). Its own deployment, not a schedule with parameters on ``conductor-task/run``:
``conductor up`` re-registers that one, and re-registering a deployment replaces all of its
schedules. The task carries no id: every run gets a fresh one (and its own branch).

Prefect's scheduler keeps runs created ahead: at least 3 and at least an hour's worth (at most
100), so a schedule every few minutes shows that many waiting runs in ``conductor tasks list``.

Used by ``conductor schedule``, the dashboard's Schedules page and the MCP server alike.
"""

from __future__ import annotations

import asyncio
import difflib
from datetime import datetime
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.responses import DeploymentResponse
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound
from pydantic import BaseModel, ConfigDict, Field

from claude_conductor.client.schedule_options import (
    BUILTIN_NAMES,
    Timing,
    parse_timing,
    schedule_name,
)
from claude_conductor.client.submission import check_sources
from claude_conductor.errors import InputError, NotFoundError
from claude_conductor.flows.fanout import submission_tags
from claude_conductor.models import TaskSpec
from claude_conductor.settings import ConductorSettings
from claude_conductor.taskfile import parse_task
from claude_conductor.work_pools import deployments
from claude_conductor.work_pools.pools import pool_name, queue_for_priority

__all__ = [
    "SCHEDULE_TAG",
    "ScheduleInfo",
    "Timing",
    "add_schedule",
    "find_schedule",
    "list_schedules",
    "parse_timing",
    "remove_schedule",
    "schedule_name",
    "scheduled_parameters",
    "set_schedule_active",
]

SCHEDULE_TAG = "scheduled"
"""The deployment tag every schedule carries (the nightly review's too)."""
_FLOWS = {d.flow_name: d for d in (deployments.TASK_DEPLOYMENT, deployments.FANOUT_DEPLOYMENT)}


def scheduled_parameters(spec: TaskSpec) -> dict[str, Any]:
    """The deployment's parameters: the task as given, without an id (each run gets its own;
    a fixed id would make every run share one branch). ``InputError`` when the task or a
    subtask sets one."""
    for path, task in [
        ("id", spec),
        *((f"subtasks.{i}.id", s) for i, s in enumerate(spec.subtasks)),
    ]:
        if "id" in task.model_fields_set:
            raise InputError(
                f"field {path!r} = {task.id!r}: a scheduled task gets a fresh id (and branch) "
                "at every run; remove the id from the task file",
                field=path,
                value=task.id,
            )
    data = spec.model_dump(mode="json", exclude={"id"})
    # Subtasks as given: what they leave unset (id, repo, limits) they inherit at each run.
    data["subtasks"] = [
        sub.model_dump(mode="json", exclude_unset=True, exclude={"id"}) for sub in spec.subtasks
    ]
    return {"spec": data}


class ScheduleInfo(BaseModel):
    """One schedule as the CLI, the dashboard and the MCP server show it."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="The schedule's name (its deployment's name).")
    deployment: str = Field(description="`<flow>/<name>`, as Prefect shows it.")
    deployment_id: UUID = Field(description="The deployment's id.")
    active: bool = Field(description="Whether it fires (schedule on, deployment not paused).")
    timing: str = Field(description="When it fires, in words.")
    cron: str | None = Field(default=None, description="Its cron expression, if any.")
    interval_seconds: float | None = Field(default=None, description="Its interval, if any.")
    timezone: str | None = Field(default=None, description="Its time zone.")
    kind: str | None = Field(default=None, description="The task's kind.")
    title: str = Field(default="", description="The task's title or prompt's first line.")
    repo: str | None = Field(default=None, description="The task's repository.")
    next_run: datetime | None = Field(default=None, description="When it fires next.")
    last_state: str | None = Field(default=None, description="State of its latest run.")
    last_run_id: UUID | None = Field(default=None, description="Its latest run's id.")
    builtin: bool = Field(default=False, description="One of Conductor's own (nightly review).")


def _info(
    d: DeploymentResponse, flow: str, next_run: datetime | None, last: Any | None
) -> ScheduleInfo:
    spec = (d.parameters or {}).get("spec") or {}
    title = str(spec.get("title") or spec.get("prompt") or spec.get("command") or "")
    title = title.strip().splitlines()[0][:80] if title.strip() else ""
    cron = interval = tz = None
    for item in d.schedules:
        sched = item.schedule
        if isinstance(sched, CronSchedule):
            cron, tz = sched.cron, sched.timezone
        elif isinstance(sched, IntervalSchedule):
            interval, tz = sched.interval.total_seconds(), sched.timezone
    timing = Timing(cron=cron, interval_seconds=interval, timezone=tz or "UTC")
    described = timing.describe() if cron or interval else "no schedule"
    return ScheduleInfo(
        name=d.name,
        deployment=f"{flow}/{d.name}",
        deployment_id=d.id,
        active=bool(d.schedules) and any(s.active for s in d.schedules) and not d.paused,
        timing=described,
        cron=cron,
        interval_seconds=interval,
        timezone=tz,
        kind=spec.get("kind") or "generic",
        title=title,
        repo=spec.get("repo"),
        next_run=next_run,
        last_state=last.state.name if last is not None and last.state else None,
        last_run_id=last.id if last is not None else None,
        builtin=d.name in BUILTIN_NAMES,
    )


async def _schedule_deployments(client: PrefectClient) -> list[tuple[str, DeploymentResponse]]:
    flows = await client.read_flows(flow_filter=FlowFilter(name=FlowFilterName(any_=list(_FLOWS))))
    names = {f.id: f.name for f in flows}
    if not names:
        return []
    found = await client.read_deployments(
        flow_filter=FlowFilter(name=FlowFilterName(any_=list(_FLOWS)))
    )
    return sorted(
        ((names[d.flow_id], d) for d in found if d.flow_id in names and SCHEDULE_TAG in d.tags),
        key=lambda pair: pair[1].name,
    )


async def list_schedules(client: PrefectClient) -> list[ScheduleInfo]:
    """Every schedule on the API, by name, with its next run and its latest run's state."""
    pairs = await _schedule_deployments(client)
    ids = [d.id for _, d in pairs]
    upcoming: dict[UUID, datetime] = {}
    latest: dict[UUID, Any] = {}
    if ids:
        by_deployment = FlowRunFilterDeploymentId(any_=ids)
        scheduled = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=by_deployment,
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
            ),
            sort=FlowRunSort.NEXT_SCHEDULED_START_TIME_ASC,
            limit=200,
        )
        for run in scheduled:
            when = run.next_scheduled_start_time or run.expected_start_time
            if run.deployment_id is not None and when is not None:
                upcoming.setdefault(run.deployment_id, when)
        started = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=by_deployment,
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(not_any_=[StateType.SCHEDULED])
                ),
            ),
            sort=FlowRunSort.START_TIME_DESC,
            limit=200,
        )
        for run in started:
            if run.deployment_id is not None:
                latest.setdefault(run.deployment_id, run)
    return [_info(d, flow, upcoming.get(d.id), latest.get(d.id)) for flow, d in pairs]


async def find_schedule(client: PrefectClient, name: str) -> tuple[str, DeploymentResponse]:
    """A schedule by its name (or ``<flow>/<name>``); ``NotFoundError`` listing the known
    ones otherwise."""
    pairs = await _schedule_deployments(client)
    for flow, d in pairs:
        if name in (d.name, f"{flow}/{d.name}"):
            return flow, d
    known = [d.name for _, d in pairs]
    close = difflib.get_close_matches(name, known, n=1)
    hint = (
        f"did you mean {close[0]!r}?"
        if close
        else ("the schedules are: " + ", ".join(known) if known else "there are no schedules")
    )
    raise NotFoundError(
        f"no schedule {name!r} on {client.api_url}; {hint} (list them with "
        "`conductor schedule list`)",
        field="name",
        value=name,
    )


async def add_schedule(
    client: PrefectClient,
    settings: ConductorSettings,
    spec: TaskSpec,
    timing: Timing,
    name: str,
) -> ScheduleInfo:
    """Create the schedule's deployment (active at once). ``InputError`` when the name is
    taken; nothing is created then."""
    parameters = scheduled_parameters(spec)
    base = deployments.FANOUT_DEPLOYMENT if spec.subtasks else deployments.TASK_DEPLOYMENT
    for flow in _FLOWS:
        try:
            await client.read_deployment_by_name(f"{flow}/{name}")
        except ObjectNotFound:
            continue
        raise InputError(
            f"--name {name!r}: a schedule of that name already exists ({flow}/{name}); remove "
            f"it first (`conductor schedule remove {name}`) or choose another --name",
            field="--name",
            value=name,
        )
    schedule = timing.to_prefect()
    flow_id = await client.create_flow_from_name(base.flow_name)
    deployment_id = await client.create_deployment(
        flow_id=flow_id,
        name=name,
        entrypoint=base.entrypoint,
        work_pool_name=pool_name(settings, base.pool),
        work_queue_name=queue_for_priority(spec.priority),
        description=f"Conductor schedule {name!r}: {spec.display_title} ({timing.describe()}).",
        tags=list(dict.fromkeys([*submission_tags(spec), SCHEDULE_TAG, f"schedule:{name}"])),
        parameters=parameters,
        parameter_openapi_schema=deployments.spec_parameter_schema(),
        enforce_parameter_schema=True,
        pull_steps=deployments.PULL_STEPS,
        schedules=[DeploymentScheduleCreate(schedule=schedule, active=True, slug=name)],
        paused=False,
    )
    created = await client.read_deployment(deployment_id)
    return _info(created, base.flow_name, None, None)


async def _drop_pending_runs(client: PrefectClient, deployment_id: UUID) -> int:
    """Delete the deployment's auto-scheduled runs that have not started (Prefect keeps the
    ones already due when a schedule is switched off)."""
    runs = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
        ),
        limit=200,
    )
    dropped = 0
    for run in runs:
        if run.auto_scheduled and run.run_count == 0:
            try:
                await client.delete_flow_run(run.id)
            except ObjectNotFound:
                continue
            dropped += 1
    return dropped


def _check_runnable(d: DeploymentResponse) -> None:
    """Before resuming: its task is valid and its repository is there (the nightly review
    example names ``/path/to/your/repository`` until it is set)."""
    data = (d.parameters or {}).get("spec") or {}
    try:
        spec = parse_task(data, source=f"schedule {d.name!r}")
        check_sources(spec)
    except InputError as exc:
        raise InputError(
            f"schedule {d.name!r} cannot run as it is: {exc}; schedule a task file of yours "
            "instead (`conductor schedule add task.yaml --cron ...`)",
            field="repo",
            value=data.get("repo"),
        ) from exc


async def set_schedule_active(client: PrefectClient, name: str, active: bool) -> ScheduleInfo:
    """Pause (no new runs; the ones waiting to start are dropped) or resume a schedule."""
    _, d = await find_schedule(client, name)
    if not d.schedules:
        raise InputError(f"deployment {name!r} has no schedule to pause or resume", field="name")
    if active:
        await asyncio.to_thread(_check_runnable, d)
    for item in d.schedules:
        await client.update_deployment_schedule(d.id, item.id, active=active)
    if active and d.paused:
        await client.resume_deployment(d.id)
    if not active:
        await _drop_pending_runs(client, d.id)
    infos = {i.deployment_id: i for i in await list_schedules(client)}
    return infos[d.id]


async def remove_schedule(client: PrefectClient, name: str) -> ScheduleInfo:
    """Delete a schedule (its deployment and its runs still waiting to start; the history of
    finished runs stays)."""
    flow, d = await find_schedule(client, name)
    info = _info(d, flow, None, None)
    await client.delete_deployment(d.id)
    return info
