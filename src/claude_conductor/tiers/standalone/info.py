"""The standalone stack's status (``conductor status``): its processes from their PID files,
its API's health, pools and runs. Kept apart from ``stack`` so answering it imports nothing
of Prefect (see ``client.rest``)."""

from __future__ import annotations

from claude_conductor.client.connection import run_sync
from claude_conductor.client.rest import api_reader
from claude_conductor.settings import ConductorSettings
from claude_conductor.system import processes
from claude_conductor.tiers.standalone import addons, launch
from claude_conductor.tiers.status import StackInfo, daemon_statuses, read_stack_status

__all__ = ["status"]


def status(settings: ConductorSettings) -> StackInfo:
    """What runs, whether the API answers, the pools' slots and their queued/running runs."""
    api_url = settings.server.url
    daemons = daemon_statuses(settings)
    healthy = processes.http_ok(launch.health_url(api_url))
    info = StackInfo(
        tier=settings.tier,
        api_url=api_url,
        ui_url=api_url.removesuffix("/api") if settings.server.api_url else launch.ui_url(settings),
        healthy=healthy,
        pool=settings.worker.pool,
        coordinator_pool=settings.worker.coordinator_pool,
        daemons=daemons,
        dashboard_url=addons.dashboard_url(settings),
    )
    if not healthy:
        return info

    async def _query() -> StackInfo:
        async with api_reader(settings, api_url=api_url, check=False) as api:  # just checked
            return await read_stack_status(api, settings, info)

    return run_sync(_query())
