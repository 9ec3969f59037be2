"""Every Conductor deployment, defined once. ``prefect.yaml`` at the repository root declares
the same ones for ``prefect deploy --all`` (a unit test keeps the two in step).

How a worker finds the flow code: entrypoints are module paths
(``claude_conductor.flows.task_flow.conductor_task``, Prefect's ``EntrypointType.MODULE_PATH``
form), imported from the installed package by the flow-run process, which runs the worker's
own Python. No code is copied or pulled. The single pull step, ``set_working_directory: .``, is
a deliberate no-op: without any pull step Prefect 3.8 copies the *worker's current directory*
into each run's temporary directory, which is wasteful at best.

Registering does not import the flows: the deployments only need the flow names, the
entrypoints and the one parameter every Conductor flow takes, ``spec: TaskSpec``. Its schema
(every field with its description, types and bounds) is what the Prefect UI's Run form shows,
and with ``enforce_parameter_schema`` the API refuses a bad value before any run is created.
``prefect deploy`` computes the same schema from the flows' signatures (a test checks).
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.responses import DeploymentResponse
from prefect.client.schemas.schedules import CronSchedule
from prefect.exceptions import ObjectNotFound
from prefect.utilities.callables import parameter_schema
from pydantic import BaseModel, ConfigDict, Field

from claude_conductor.models import TaskSpec
from claude_conductor.settings import ConductorSettings
from claude_conductor.work_pools.pools import DEFAULT_QUEUE, PoolKind, pool_name

__all__ = [
    "DEPLOYMENTS",
    "FANOUT_DEPLOYMENT",
    "NIGHTLY_REVIEW_DEPLOYMENT",
    "PULL_STEPS",
    "TASK_DEPLOYMENT",
    "DeploymentDef",
    "ScheduleDef",
    "apply_deployments",
    "spec_parameter_schema",
]

logger = logging.getLogger(__name__)

PULL_STEPS: list[dict[str, Any]] = [
    {"prefect.deployments.steps.set_working_directory": {"directory": "."}}
]


class ScheduleDef(BaseModel):
    """A cron schedule of a deployment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    slug: str = Field(description="Stable id of the schedule; keeps its state across updates.")
    cron: str = Field(description="Cron expression, e.g. `0 2 * * *`.")
    timezone: str = Field(default="UTC", description="Time zone the cron expression is in.")
    active: bool = Field(
        default=False,
        description="Whether it fires. Only the first registration sets it; a later one "
        "keeps what the user chose in the UI.",
    )


class DeploymentDef(BaseModel):
    """One deployment of a Conductor flow."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    flow_name: str = Field(description="The flow's name, e.g. `conductor-task`.")
    name: str = Field(description="The deployment's name; `<flow>/<name>` identifies it.")
    entrypoint: str = Field(description="Module path of the flow function (dotted).")
    pool: PoolKind = Field(description="agents (holds an agent slot) or coordinators.")
    work_queue: str = Field(default=DEFAULT_QUEUE, description="Queue used when none is given.")
    description: str = Field(default="", description="Shown in the Prefect UI.")
    tags: tuple[str, ...] = Field(default=("conductor",), description="Deployment tags.")
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Default parameters (`spec` for Conductor flows)."
    )
    schedule: ScheduleDef | None = Field(default=None, description="When it runs by itself.")
    typed_spec: bool = Field(
        default=True,
        description="Whether `spec` is a `TaskSpec` the API validates (every Conductor flow); "
        "false for a flow taking a free-form `spec: dict`.",
    )

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}"


_NIGHTLY_REVIEW_SPEC: dict[str, Any] = {
    "kind": "code_review",
    "title": "Nightly code review",
    "prompt": (
        "Review the changes committed in the last 24 hours (git log --since='24 hours ago'). "
        "Report bugs, risky changes and missing tests with file and line references, most "
        "important first. Do not modify any file."
    ),
    # An example: set your repository (path or git URL) before activating the schedule.
    "repo": "/path/to/your/repository",
    "priority": 2,
    "timeout_seconds": 1800,
    "max_turns": 40,
    "max_budget_usd": 2.0,
    "tags": ["scheduled", "nightly"],
}

TASK_DEPLOYMENT = DeploymentDef(
    flow_name="conductor-task",
    name="run",
    entrypoint="claude_conductor.flows.task_flow.conductor_task",
    pool="agents",
    description="Run one Conductor task (a TaskSpec as `spec`) with a Claude Code agent.",
)
FANOUT_DEPLOYMENT = DeploymentDef(
    flow_name="conductor-fanout",
    name="run",
    entrypoint="claude_conductor.flows.fanout.conductor_fanout",
    pool="coordinators",
    description="Run a task's subtasks in parallel as conductor-task runs and aggregate them.",
)
NIGHTLY_REVIEW_DEPLOYMENT = DeploymentDef(
    flow_name="conductor-task",
    name="nightly-review",
    entrypoint="claude_conductor.flows.task_flow.conductor_task",
    pool="agents",
    work_queue="low",
    description="Example schedule: a code review of one repository every night at 02:00 UTC. "
    "Inactive until you set its repository and turn the schedule on.",
    tags=("conductor", "scheduled"),
    parameters={"spec": _NIGHTLY_REVIEW_SPEC},
    schedule=ScheduleDef(slug="nightly", cron="0 2 * * *", timezone="UTC", active=False),
)
DEPLOYMENTS: tuple[DeploymentDef, ...] = (
    TASK_DEPLOYMENT,
    FANOUT_DEPLOYMENT,
    NIGHTLY_REVIEW_DEPLOYMENT,
)


def _spec_signature(spec: TaskSpec) -> None:
    """The one parameter of every Conductor flow: the task."""


def _free_spec_signature(spec: dict[str, Any]) -> None:
    """A flow that takes any mapping as ``spec``."""


def spec_parameter_schema(*, typed: bool = True) -> dict[str, Any]:
    """The deployments' parameter schema: ``spec``, a ``TaskSpec`` (or, untyped, any mapping),
    required."""
    signature = _spec_signature if typed else _free_spec_signature
    return parameter_schema(signature).model_dump(exclude_unset=True)


async def _existing(client: PrefectClient, full_name: str) -> DeploymentResponse | None:
    try:
        return await client.read_deployment_by_name(full_name)
    except ObjectNotFound:
        return None


def _schedules(
    definition: DeploymentDef, existing: DeploymentResponse | None
) -> list[DeploymentScheduleCreate]:
    if definition.schedule is None:
        return []
    sched = definition.schedule
    active = sched.active
    if existing is not None:
        for current in existing.schedules:
            if current.slug == sched.slug:
                active = current.active  # the user's choice wins over the default
    return [
        DeploymentScheduleCreate(
            schedule=CronSchedule(cron=sched.cron, timezone=sched.timezone),
            active=active,
            slug=sched.slug,
        )
    ]


async def apply_deployments(
    client: PrefectClient,
    settings: ConductorSettings,
    definitions: tuple[DeploymentDef, ...] = DEPLOYMENTS,
) -> dict[str, UUID]:
    """Create or update each deployment on its pool; returns ``{"flow/name": id}``. Idempotent:
    a schedule the user switched on (or off) and a deployment they paused stay that way."""
    ids: dict[str, UUID] = {}
    for definition in definitions:
        existing = await _existing(client, definition.full_name)
        flow_id = await client.create_flow_from_name(definition.flow_name)
        ids[definition.full_name] = await client.create_deployment(
            flow_id=flow_id,
            name=definition.name,
            entrypoint=definition.entrypoint,
            work_pool_name=pool_name(settings, definition.pool),
            work_queue_name=definition.work_queue,
            description=definition.description,
            tags=list(definition.tags),
            parameters=definition.parameters,
            parameter_openapi_schema=spec_parameter_schema(typed=definition.typed_spec),
            enforce_parameter_schema=definition.typed_spec,
            pull_steps=PULL_STEPS,
            schedules=_schedules(definition, existing),
            paused=existing.paused if existing is not None else False,
        )
        logger.info("registered deployment %s", definition.full_name)
    return ids
