"""What a Conductor stack looks like right now: its processes, its API, its pools' slots and
runs. ``read_stack_status`` only needs the API (``client.rest.ApiReader``: no Prefect import,
its reads made at once), so ``conductor status`` answers fast on any tier's API."""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from claude_conductor.client.rest import ApiReader
from claude_conductor.settings import ConductorSettings
from claude_conductor.system import processes
from claude_conductor.work_pools.names import BUSY_STATES

__all__ = [
    "DaemonStatus",
    "PoolStatus",
    "ScaleResult",
    "StackInfo",
    "daemon_statuses",
    "read_pool_status",
    "read_stack_status",
]


class DaemonStatus(BaseModel):
    """One process of the stack."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="prefect-server, worker-agents, worker-coordinators, ...")
    pid: int | None = Field(default=None, description="Its process id, when known.")
    running: bool = Field(description="Whether it runs now.")
    log_path: str | None = Field(default=None, description="Its log file.")


class PoolStatus(BaseModel):
    """A work pool's slots and runs."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Work pool name.")
    slots: int | None = Field(description="Concurrency limit (None: unlimited).")
    paused: bool = Field(description="A paused pool hands out no runs.")
    busy: int = Field(description="Runs holding a slot (see work_pools.names.BUSY_STATES).")
    running: int = Field(description="Runs in Running state.")
    queued: int = Field(description="Runs waiting (Scheduled, Late included).")
    workers_online: int = Field(description="Workers that sent a recent heartbeat.")


class StackInfo(BaseModel):
    """The stack as ``conductor up`` / ``conductor status`` report it."""

    model_config = ConfigDict(frozen=True)

    tier: Literal["standalone", "docker", "kubernetes"] = Field(description="Which tier.")
    api_url: str = Field(description="The Prefect API.")
    ui_url: str = Field(description="The Prefect UI.")
    dashboard_url: str | None = Field(default=None, description="Conductor's dashboard.")
    healthy: bool = Field(description="Whether the API answered its health check.")
    pool: str = Field(description="The agent pool.")
    agents: int | None = Field(default=None, description="Agent slots (the pool's limit).")
    busy_slots: int = Field(default=0, description="Agent slots in use.")
    queued: int = Field(default=0, description="Agent runs waiting for a slot.")
    running: int = Field(default=0, description="Agent runs running.")
    coordinator_pool: str = Field(description="The pool of fan-out parents.")
    pools: list[PoolStatus] = Field(default_factory=list, description="Both pools in detail.")
    deployments: list[str] = Field(default_factory=list, description="`flow/name` registered.")
    daemons: list[DaemonStatus] = Field(default_factory=list, description="Its processes.")
    started: list[str] = Field(default_factory=list, description="Started by this `up`.")
    already_running: list[str] = Field(
        default_factory=list, description="Found running by this `up`."
    )

    @property
    def pids(self) -> dict[str, int]:
        return {d.name: d.pid for d in self.daemons if d.running and d.pid is not None}

    @property
    def ready(self) -> bool:
        return self.healthy and all(p.workers_online > 0 for p in self.pools)


class ScaleResult(BaseModel):
    """What ``scale_agents`` did."""

    model_config = ConfigDict(frozen=True)

    agents: int = Field(description="The new number of agent slots.")
    applied_live: bool = Field(description="Whether the running server took it at once.")
    config_path: str = Field(description="Where the count was saved.")

    def __str__(self) -> str:
        where = "now" if self.applied_live else "at the next `conductor up`"
        return (
            f"agent slots set to {self.agents} (takes effect {where}; saved in {self.config_path})"
        )


def daemon_statuses(settings: ConductorSettings) -> list[DaemonStatus]:
    out: list[DaemonStatus] = []
    for name in processes.pid_file_names(settings):
        daemon = processes.read_daemon(settings, name)
        if daemon is not None:
            out.append(
                DaemonStatus(
                    name=name,
                    pid=daemon.pid,
                    running=daemon.alive,
                    log_path=str(daemon.log_path),
                )
            )
    return out


async def read_pool_status(api: ApiReader, pool: str) -> PoolStatus | None:
    """Slots, busy/running/queued counts and online workers of ``pool``; None if it is absent."""
    work_pool = await api.work_pool(pool)
    if work_pool is None:
        return None
    workers, busy, running, queued = await asyncio.gather(
        api.workers(pool),
        api.count_runs(pool, BUSY_STATES),
        api.count_runs(pool, ["RUNNING"]),
        api.count_runs(pool, ["SCHEDULED"]),
    )
    return PoolStatus(
        name=pool,
        slots=work_pool.get("concurrency_limit"),
        paused=bool(work_pool.get("is_paused")),
        busy=busy,
        running=running,
        queued=queued,
        workers_online=sum(1 for w in workers if w.get("status") == "ONLINE"),
    )


async def read_stack_status(
    api: ApiReader, settings: ConductorSettings, base: StackInfo
) -> StackInfo:
    """``base`` completed with what the API knows: pools, slots, runs, deployments."""
    names = (settings.worker.pool, settings.worker.coordinator_pool)
    found, deployments = await asyncio.gather(
        asyncio.gather(*(read_pool_status(api, name) for name in names)),
        api.deployment_names(names),
    )
    pools = [p for p in found if p is not None]
    agent_pool = next((p for p in pools if p.name == settings.worker.pool), None)
    update: dict[str, object] = {"pools": pools, "deployments": deployments}
    if agent_pool is not None:
        update |= {
            "agents": agent_pool.slots,
            "busy_slots": agent_pool.busy,
            "queued": agent_pool.queued,
            "running": agent_pool.running,
        }
    return base.model_copy(update=update)
