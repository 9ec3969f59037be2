"""Conductor's work pools: the agent pool (one slot per agent) and the coordinator pool (fan-out
parents), their base job templates, and the priority work queues.

Agent slots are the agent pool's ``concurrency_limit``. The server hands a worker at most that
many runs (counting the pool's busy ones: ``BUSY_STATE_TYPES``) and hands them out by queue priority,
so an urgent task always takes the next free slot, a waiting task simply stays Scheduled, and
changing the limit (``conductor agents scale``) takes effect at the next poll without restarting
anything.

A fan-out parent waits for its subtasks, which are agent runs. If it held an agent slot while
waiting, N parents (or one parent with N = 1) would take every slot and wait forever for
children that can never start. So parents run on their own pool with its own limit.

Priorities: a task's ``priority`` 1-10 (10 most urgent) picks one of three queues per pool.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    WorkPoolFilter,
    WorkPoolFilterName,
)
from prefect.client.schemas.objects import StateType, WorkPool, WorkQueue
from prefect.exceptions import ObjectNotFound

from claude_conductor.errors import InputError
from claude_conductor.settings import ConductorSettings
from claude_conductor.work_pools.names import BUSY_STATES, PoolKind, pool_name

__all__ = [
    "BUSY_STATE_TYPES",
    "DEFAULT_QUEUE",
    "LOCKED_JOB_VARIABLES",
    "LOCKED_TEMPLATE",
    "PRIORITY_QUEUES",
    "PoolKind",
    "PriorityQueue",
    "TemplateKind",
    "busy_filter",
    "count_busy",
    "ensure_agent_pool",
    "ensure_coordinator_pool",
    "ensure_locked_pool",
    "ensure_pools",
    "load_template",
    "pool_name",
    "queue_for_priority",
    "set_agent_slots",
]

logger = logging.getLogger(__name__)

TemplateKind = Literal["conductor", "process", "docker", "kubernetes", "process-locked"]

BUSY_STATE_TYPES = tuple(StateType(name) for name in BUSY_STATES)
"""``names.BUSY_STATES`` as Prefect's state types."""


def busy_filter() -> FlowRunFilter:
    """The flow runs that hold a slot (see ``BUSY_STATE_TYPES``)."""
    return FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=list(BUSY_STATE_TYPES)))
    )


async def count_busy(client: PrefectClient, pool: str) -> int:
    """How many of ``pool``'s slots are busy now."""
    return await client.count_flow_runs(
        flow_run_filter=busy_filter(),
        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
    )


@dataclass(frozen=True)
class PriorityQueue:
    """A work queue and the task priorities it takes."""

    name: str
    queue_priority: int  # Prefect's: 1 is served first
    min_priority: int  # task priority range, inclusive
    max_priority: int
    description: str


PRIORITY_QUEUES: tuple[PriorityQueue, ...] = (
    PriorityQueue("urgent", 1, 8, 10, "Conductor tasks of priority 8-10: served first."),
    PriorityQueue("normal", 2, 4, 7, "Conductor tasks of priority 4-7 (the default, 5)."),
    PriorityQueue("low", 3, 1, 3, "Conductor tasks of priority 1-3: served last."),
)
#: Where runs submitted without a queue go (deployments default to it).
DEFAULT_QUEUE = "normal"
# Every pool also has Prefect's own "default" queue; it is kept after ours.
_PREFECT_DEFAULT_QUEUE = "default"


def queue_for_priority(priority: int) -> str:
    """The work queue of a task priority (1 lowest ... 10 most urgent)."""
    for queue in PRIORITY_QUEUES:
        if queue.min_priority <= priority <= queue.max_priority:
            return queue.name
    raise InputError(
        f"priority {priority!r} is out of range: use 1 (lowest) to 10 (most urgent)",
        field="priority",
        value=priority,
    )


LOCKED_TEMPLATE: TemplateKind = "process-locked"
"""The docker tier's template for pools whose flow-run engines run inside a worker that holds
the API credential and the Docker socket: it exposes no ``command``, ``env``, ``working_dir`` or
anything else that would change what runs there, and its variables schema forbids any other key,
so the API refuses a run or a deployment that asks for one (422, naming the variable)."""
LOCKED_JOB_VARIABLES = frozenset({"name", "labels", "stream_output"})
"""The only job variables ``LOCKED_TEMPLATE`` takes."""


def load_template(kind: TemplateKind) -> dict[str, Any]:
    """The base job template Conductor uses for a work pool type (a fresh copy)."""
    name = f"{kind}.json"
    source = resources.files("claude_conductor.work_pools") / "templates" / name
    if not source.is_file():
        raise InputError(
            f"no {kind!r} base job template ships with this Conductor "
            f"(work_pools/templates/{name}); install the extra for that tier",
            field="kind",
            value=kind,
        )
    data: dict[str, Any] = json.loads(source.read_text(encoding="utf-8"))
    return data


async def _ensure_pool(
    client: PrefectClient,
    name: str,
    *,
    template_kind: TemplateKind,
    concurrency_limit: int,
    description: str,
    pool_type: str | None = None,
) -> WorkPool:
    """Create or update ``name``; its type is ``pool_type`` (default: the template's kind)."""
    template = load_template(template_kind)
    pool_type = pool_type or template_kind
    try:
        pool = await client.read_work_pool(name)
    except ObjectNotFound:
        pool = await client.create_work_pool(
            WorkPoolCreate(
                name=name,
                type=pool_type,
                description=description,
                base_job_template=template,
                concurrency_limit=concurrency_limit,
            )
        )
        logger.info("created work pool %s (limit %d)", name, concurrency_limit)
    else:
        if pool.type != pool_type and await _replaceable(client, pool, pool_type):
            await client.delete_work_pool(name)
            logger.info("work pool %s: type %s replaced by %s", name, pool.type, pool_type)
            return await _ensure_pool(
                client,
                name,
                template_kind=template_kind,
                concurrency_limit=concurrency_limit,
                description=description,
                pool_type=pool_type,
            )
        if (pool.type, pool_type) == ("process", "conductor"):
            if template_kind == "conductor":  # kept until its runs are done (see above)
                template = load_template("process")
        elif pool.type != pool_type:
            raise InputError(
                f"work pool {name!r} exists with type {pool.type!r}, not {pool_type!r}; "
                "delete it (`prefect work-pool delete`) or choose another pool name",
                field="worker.pool",
                value=name,
            )
        update = WorkPoolUpdate(
            concurrency_limit=concurrency_limit,
            base_job_template=template,
            description=description,
            is_paused=False,
        )
        await client.update_work_pool(name, update)
        pool = await client.read_work_pool(name)
    await _ensure_queues(client, name)
    return pool


async def _replaceable(client: PrefectClient, pool: WorkPool, wanted: str) -> bool:
    """An older Conductor's ``process`` pool becomes a ``conductor`` pool (a pool's type
    cannot be changed in place) when none of its runs is waiting or in flight."""
    if (pool.type, wanted) != ("process", "conductor"):
        return False
    unfinished = await client.count_flow_runs(
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(
                type=FlowRunFilterStateType(
                    any_=[StateType.SCHEDULED, *BUSY_STATE_TYPES, StateType.PAUSED]
                )
            )
        ),
        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool.name])),
    )
    if unfinished:
        logger.warning(
            "work pool %s is of type process with %d unfinished runs: kept as it is "
            "(run `conductor up` again once they are done to use the conductor worker)",
            pool.name,
            unfinished,
        )
    return unfinished == 0


async def _ensure_queues(client: PrefectClient, pool: str) -> list[WorkQueue]:
    existing = {q.name: q for q in await client.read_work_queues(work_pool_name=pool)}
    for queue in PRIORITY_QUEUES:
        current = existing.get(queue.name)
        if current is None:
            await client.create_work_queue(
                name=queue.name,
                description=queue.description,
                priority=queue.queue_priority,
                work_pool_name=pool,
            )
        elif current.priority != queue.queue_priority or current.is_paused:
            # The server shifts other queues' priorities to keep them unique.
            await client.update_work_queue(
                current.id, priority=queue.queue_priority, is_paused=False
            )
    queues = await client.read_work_queues(work_pool_name=pool)
    default = next((q for q in queues if q.name == _PREFECT_DEFAULT_QUEUE), None)
    lowest = len(PRIORITY_QUEUES) + 1
    if default is not None and default.priority < lowest:
        await client.update_work_queue(default.id, priority=lowest)
        queues = await client.read_work_queues(work_pool_name=pool)
    return queues


async def ensure_agent_pool(client: PrefectClient, settings: ConductorSettings) -> WorkPool:
    """Create or update the agent pool: ``conductor`` type (``work_pools.worker``), its
    template, one slot per agent (``settings.worker.agents``), not paused, with the priority
    queues."""
    return await _ensure_pool(
        client,
        settings.worker.pool,
        template_kind="conductor",
        concurrency_limit=settings.worker.agents,
        description="Claude Conductor agents: one slot per agent; queues urgent, normal, low.",
    )


async def ensure_coordinator_pool(client: PrefectClient, settings: ConductorSettings) -> WorkPool:
    """Create or update the pool of fan-out parents (``settings.worker.coordinator_slots``)."""
    return await _ensure_pool(
        client,
        settings.worker.coordinator_pool,
        template_kind="conductor",
        concurrency_limit=settings.worker.coordinator_slots,
        description="Claude Conductor fan-out parents: they wait for subtasks on the agent pool.",
    )


async def ensure_locked_pool(
    client: PrefectClient,
    name: str,
    *,
    worker_type: str,
    concurrency_limit: int,
    description: str,
) -> WorkPool:
    """Create or update a pool of type ``worker_type`` with ``LOCKED_TEMPLATE`` (docker tier)."""
    return await _ensure_pool(
        client,
        name,
        template_kind=LOCKED_TEMPLATE,
        concurrency_limit=concurrency_limit,
        description=description,
        pool_type=worker_type,
    )


async def ensure_pools(client: PrefectClient, settings: ConductorSettings) -> list[WorkPool]:
    """Both of Conductor's pools, created or brought up to date."""
    return [
        await ensure_agent_pool(client, settings),
        await ensure_coordinator_pool(client, settings),
    ]


async def set_agent_slots(client: PrefectClient, settings: ConductorSettings, agents: int) -> None:
    """Change the agent pool's concurrency limit (the number of agent slots) in place."""
    if agents < 1:
        raise InputError(
            f"agents must be at least 1, got {agents!r}", field="worker.agents", value=agents
        )
    await client.update_work_pool(settings.worker.pool, WorkPoolUpdate(concurrency_limit=agents))
