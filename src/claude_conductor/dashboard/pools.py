"""Work pools, their workers and agent slots (what each one is doing), and scaling the slots.
No Streamlit here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.sorting import FlowRunSort

from claude_conductor.client import tasks as api
from claude_conductor.dashboard.cache import cached, clear_cache
from claude_conductor.dashboard.data import task_row, utc_timestamp
from claude_conductor.settings import ConductorSettings
from claude_conductor.work_pools.pools import BUSY_STATE_TYPES, count_busy

__all__ = ["AgentsView", "fetch_agents", "scale", "scaling_advice"]

_ACTIVE = list(BUSY_STATE_TYPES)


@dataclass
class AgentsView:
    """Work pools, their workers, and what each agent slot is doing."""

    pools: pd.DataFrame  # pool, type, status, slots, busy, workers_online
    workers: pd.DataFrame  # worker, pool, status, last_heartbeat, busy
    slots: pd.DataFrame  # pool, slot, task_id, title, kind, state, worker, started, seconds
    default_pool: str
    configured_agents: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def workers_online(self) -> int:
        return int((self.workers["status"] == "online").sum()) if len(self.workers) else 0

    @property
    def total_slots(self) -> int:
        return int(self.pools["slots"].sum()) if len(self.pools) else 0

    @property
    def busy_slots(self) -> int:
        return int(self.pools["busy"].sum()) if len(self.pools) else 0

    def _agent_pool(self) -> pd.DataFrame:
        mine = self.pools[self.pools["pool"] == self.default_pool] if len(self.pools) else None
        return self.pools if mine is None or not len(mine) else mine

    @property
    def agent_slots(self) -> int:
        """Slots of the agent pool (what ``agents`` sets), not the fan-out parents' pool."""
        return int(self._agent_pool()["slots"].sum()) if len(self.pools) else 0

    @property
    def agent_busy(self) -> int:
        return int(self._agent_pool()["busy"].sum()) if len(self.pools) else 0


async def _read_agents(settings: ConductorSettings) -> AgentsView:
    async with api.api_client(settings) as client:
        pools = await client.read_work_pools()
        workers = {p.name: await client.read_workers_for_work_pool(p.name) for p in pools}
        busy = {p.name: await count_busy(client, p.name) for p in pools}
        active = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=["conductor"]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=_ACTIVE)),
            ),
            sort=FlowRunSort.START_TIME_DESC,
            limit=200,
        )
    now = datetime.now(UTC)
    rows = [task_row(r, None, now) for r in reversed(active)]
    pool_rows, worker_rows, slot_rows = [], [], []
    for pool in pools:
        mine = [r for r in rows if r["work_pool"] == pool.name]
        slots = pool.concurrency_limit
        if slots is None:
            slots = settings.worker.agents if pool.name == settings.worker.pool else len(mine)
        online = [w for w in workers[pool.name] if w.status.value == "ONLINE"]
        pool_rows.append(
            {
                "pool": pool.name,
                "type": pool.type,
                "status": "paused"
                if pool.is_paused
                else (pool.status.value.lower().replace("_", " ") if pool.status else "unknown"),
                "slots": int(slots),
                "busy": busy[pool.name],
                "workers_online": len(online),
            }
        )
        for w in workers[pool.name]:
            worker_rows.append(
                {
                    "worker": w.name,
                    "pool": pool.name,
                    "status": w.status.value.lower(),
                    "last_heartbeat": utc_timestamp(w.last_heartbeat_time),
                    "busy": sum(1 for r in mine if r["worker"] == w.name),
                }
            )
        for n in range(max(int(slots), len(mine))):
            run = mine[n] if n < len(mine) else None
            slot_rows.append(
                {
                    "pool": pool.name,
                    "slot": n + 1,
                    "task_id": run["task_id"] if run else "",
                    "title": run["title"] if run else "idle",
                    "kind": run["kind"] if run else "",
                    "state": run["state"] if run else "Idle",
                    "worker": run["worker"] if run else "",
                    "started": run["started"] if run else pd.NaT,
                    "seconds": run["duration_seconds"] if run else None,
                }
            )
    notes = []
    orphans = [r for r in rows if r["work_pool"] not in {p.name for p in pools}]
    if orphans:
        notes.append(f"{len(orphans)} active task(s) outside any work pool (run in-process)")
    return AgentsView(
        pools=pd.DataFrame(
            pool_rows, columns=["pool", "type", "status", "slots", "busy", "workers_online"]
        ),
        workers=pd.DataFrame(
            worker_rows, columns=["worker", "pool", "status", "last_heartbeat", "busy"]
        ),
        slots=pd.DataFrame(
            slot_rows,
            columns=[
                "pool",
                "slot",
                "task_id",
                "title",
                "kind",
                "state",
                "worker",
                "started",
                "seconds",
            ],
        ),
        default_pool=settings.worker.pool,
        configured_agents=settings.worker.agents,
        notes=notes,
    )


def fetch_agents(settings: ConductorSettings) -> AgentsView:
    """Pools, workers and slots, as frames."""
    return cached(settings, ("agents",), lambda: _read_agents(settings))


def scaling_advice(settings: ConductorSettings) -> str:
    """How agents scale on the configured tier, in the tier's own words."""
    from claude_conductor.tiers.base import get_tier

    return get_tier(settings.tier).scaling_advice(settings)


def scale(settings: ConductorSettings, agents: int) -> str:
    """Set the number of agent slots on the configured tier. ConductorError saying why not."""
    from claude_conductor.tiers.base import get_tier

    tier = get_tier(settings.tier)
    try:
        outcome = tier.scale_agents(settings, agents)
    finally:
        clear_cache()
    return str(outcome) if outcome else f"agent slots set to {agents}"
