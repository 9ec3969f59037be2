"""How a Prefect flow run is a Conductor task, whoever started it: its task id, run name and
tags. The one owner of that contract; the CLI, the dashboard, metrics and the flows all ask here.

A task's id is the ``id`` in the run's ``spec`` parameter or, for a run started elsewhere
without one (the Prefect UI's Run button, ``prefect deployment run``, a schedule), an id derived
from the flow run itself (``t-<created>-<run id>``) that the flow adopts when it starts. Either
way every client computes the same id from the run alone, before, during and after it runs.
When it starts, the flow also names the run ``<id>: <title>`` and adds the conductor tags,
``task:<id>`` among them (how ``client.tasks.find_run`` finds a task by id).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from claude_conductor.models import TaskSpec

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

__all__ = [
    "TASK_TAG_PREFIX",
    "adopt_flow_run",
    "derived_task_id",
    "identity_update",
    "run_name",
    "submission_tags",
    "task_id_of",
    "task_tag",
]

logger = logging.getLogger(__name__)

TASK_TAG_PREFIX = "task:"
_NAME_TITLE_CHARS = 60


def task_tag(task_id: str) -> str:
    """The tag that finds a task's flow run by its id."""
    return f"{TASK_TAG_PREFIX}{task_id}"


def submission_tags(spec: TaskSpec) -> list[str]:
    """Tags every conductor flow run carries: filterable in the Prefect UI and the dashboard."""
    tags = [
        "conductor",
        task_tag(spec.id),
        f"kind:{spec.kind}",
        f"priority:{spec.priority}",
        *spec.tags,
    ]
    if spec.parent_id:
        tags.append(f"parent:{spec.parent_id}")
    return list(dict.fromkeys(tags))


def run_name(spec: TaskSpec) -> str:
    """The flow run's name, readable in the Prefect UI's run list: ``<id>: <title>``."""
    title = spec.display_title
    if len(title) > _NAME_TITLE_CHARS:
        title = title[: _NAME_TITLE_CHARS - 1] + "…"
    return f"{spec.id}: {title}"


def derived_task_id(flow_run_id: UUID, created: datetime | None) -> str:
    """The id of a task whose spec names none: stable for its flow run, in the shape of
    ``new_task_id`` (``t-20261124-082539-3f9a1c``)."""
    stamp = (created or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d-%H%M%S")
    return f"t-{stamp}-{flow_run_id.hex[:6]}"


def task_id_of(run: FlowRun) -> str:
    """The task id of a conductor flow run, however it was started: the ``id`` of its ``spec``
    parameter, else the id derived from the run (which the flow adopts when it starts)."""
    spec = (run.parameters or {}).get("spec")
    if not isinstance(spec, Mapping):
        return run.name  # not a conductor task flow run
    given = spec.get("id")
    if isinstance(given, str) and given:
        return given
    return derived_task_id(run.id, run.created)


def identity_update(spec: TaskSpec, run: FlowRun) -> dict[str, Any]:
    """What ``update_flow_run`` must change so ``run`` reads as the task ``spec``: its name
    and the conductor tags it lacks (empty when it already does)."""
    update: dict[str, Any] = {}
    name = run_name(spec)
    if run.name != name:
        update["name"] = name
    current = list(run.tags or [])
    missing = [t for t in submission_tags(spec) if t not in current]
    if missing:
        update["tags"] = [*current, *missing]
    return update


async def adopt_flow_run(spec: TaskSpec) -> TaskSpec:
    """Inside a conductor flow run: make the run read as the task, whoever started it. A spec
    without an id takes the run's derived id; the run gets the task's name and tags. Returns
    the spec to run (the same one when it named its id)."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx is not None else None
    if run is None:
        return spec
    raw = (run.parameters or {}).get("spec")
    named = raw.get("id") if isinstance(raw, Mapping) else spec.id
    if not named:
        spec = spec.model_copy(update={"id": derived_task_id(run.id, run.created)})
    update = identity_update(spec, run)
    if update:
        try:
            async with get_client() as client:
                await client.update_flow_run(run.id, **update)
        except Exception as exc:  # the task still runs; only its name and tags are late
            logger.warning("could not name flow run %s after task %s: %s", run.id, spec.id, exc)
            return spec
        run.name = update.get("name", run.name)
        run.tags = update.get("tags", run.tags)
    return spec
