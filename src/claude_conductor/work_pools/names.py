"""The names the rest of Conductor shares about the two work pools, without importing Prefect
(``conductor status`` and the launch commands need them; ``work_pools.pools`` builds on
them): which pool a kind of run uses, and which states hold a slot."""

from __future__ import annotations

from typing import Literal

from claude_conductor.settings import ConductorSettings

__all__ = ["BUSY_STATES", "PoolKind", "pool_name"]

PoolKind = Literal["agents", "coordinators"]

BUSY_STATES: tuple[str, ...] = ("PENDING", "RUNNING", "CANCELLING")
"""The one definition of "busy": a run holds one of its pool's slots while it is Pending,
Running or Cancelling (the states Prefect's server counts against a pool's and a queue's
concurrency limit). ``conductor status``, the metrics and the dashboard all count with it."""


def pool_name(settings: ConductorSettings, kind: PoolKind) -> str:
    return settings.worker.pool if kind == "agents" else settings.worker.coordinator_pool
