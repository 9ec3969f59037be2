"""What a forked run's events are related to, handed from the worker to the run.

Every event Prefect's engine emits (a task run's Pending, Running, Completed...) names the
objects around the run: its flow, deployment, work queue and work pool, with their names and
tags. The engine reads them from the API once per process and keeps them
(``prefect.events.related.RESOURCE_CACHE``, never expired: a long-lived process reads them
once). A forked run is a new process each time, so each run read all four again: four
requests a run, about a tenth of the server's work for a trivial task. The worker already
holds these objects (read for the run's job configuration, cached a few seconds), so it sends
them with the run (``related_objects``) and the engine puts them in that cache before the flow
starts (``seed``): the events are the same, the reads are gone. Anything missing or unreadable
is left to the engine, which reads it as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

__all__ = ["related_objects", "seed"]

_KINDS = ("flow", "deployment", "work-queue", "work-pool")


def related_objects(
    flow_run: Any,
    *,
    flow: Any = None,
    deployment: Any = None,
    work_queue: Any = None,
    work_pool: Any = None,
) -> dict[str, dict[str, Any]]:
    """The run's related objects as the engine's cache keys them (``<kind>.<id or name>``),
    each ``{"kind", "object"}`` with the object as JSON. Objects that are not the run's are
    left out."""
    found: dict[str, dict[str, Any]] = {}

    def add(kind: str, key: Any, obj: Any) -> None:
        if obj is not None and key is not None:
            found[f"{kind}.{key}"] = {"kind": kind, "object": obj.model_dump(mode="json")}

    if flow is not None and flow.id == flow_run.flow_id:
        add("flow", flow_run.flow_id, flow)
    if deployment is not None and deployment.id == flow_run.deployment_id:
        add("deployment", flow_run.deployment_id, deployment)
    if work_queue is not None and work_queue.id == flow_run.work_queue_id:
        add("work-queue", flow_run.work_queue_id, work_queue)
    if work_pool is not None and flow_run.work_pool_name in (None, work_pool.name):
        add("work-pool", work_pool.name, work_pool)  # a scheduled run may not name its pool
    return found


def seed(objects: Mapping[str, Any] | None) -> int:
    """In the engine, before the flow starts: put ``objects`` (from ``related_objects``) in
    Prefect's related-resource cache. Returns how many were put; a Prefect without that
    cache, or an object that does not validate, is skipped (the engine reads it then)."""
    if not objects:
        return 0
    try:
        from prefect.client.schemas.objects import Flow, WorkPool, WorkQueue
        from prefect.client.schemas.responses import DeploymentResponse
        from prefect.events import related
        from prefect.types._datetime import now
    except ImportError:
        return 0
    cache = getattr(related, "RESOURCE_CACHE", None)
    if not isinstance(cache, dict):
        return 0
    classes: dict[str, Any] = {
        "flow": Flow,
        "deployment": DeploymentResponse,
        "work-queue": WorkQueue,
        "work-pool": WorkPool,
    }
    stamp, put = now("UTC"), 0
    for key, entry in objects.items():
        with contextlib.suppress(Exception):
            kind = entry["kind"]
            if kind not in _KINDS or not key.startswith(f"{kind}."):
                continue
            cache[key] = (
                {"kind": kind, "object": classes[kind].model_validate(entry["object"])},
                stamp,
            )
            put += 1
    return put
