"""The standalone stack's status (``conductor status``): its processes from their PID files,
its API's health, pools and runs. Kept apart from ``stack`` so answering it imports nothing
of Prefect (see ``client.rest``)."""

from __future__ import annotations

from claude_conductor.client.connection import run_sync
from claude_conductor.client.rest import api_reader
from claude_conductor.errors import ApiTimeoutError, ServerNotRunningError
from claude_conductor.settings import ConductorSettings
from claude_conductor.tiers.standalone import addons, launch
from claude_conductor.tiers.status import StackInfo, daemon_statuses, read_stack_status

__all__ = ["status"]

_BUSY_SECONDS = 5.0


def status(settings: ConductorSettings) -> StackInfo:
    """What runs, whether the API answers, the pools' slots and their queued/running runs."""
    api_url = settings.server.url
    info = StackInfo(
        tier=settings.tier,
        api_url=api_url,
        ui_url=api_url.removesuffix("/api") if settings.server.api_url else launch.ui_url(settings),
        healthy=False,
        pool=settings.worker.pool,
        coordinator_pool=settings.worker.coordinator_pool,
        daemons=daemon_statuses(settings),
        dashboard_url=addons.dashboard_url(settings),
    )

    async def _query() -> StackInfo:
        # A status answers quickly: a server that is up but does not answer its health check
        # within a few seconds is reported unhealthy, not waited for.
        async with api_reader(settings, api_url=api_url, busy_timeout_seconds=_BUSY_SECONDS) as api:
            return await read_stack_status(api, settings, info.model_copy(update={"healthy": True}))

    try:
        return run_sync(_query())
    except (ServerNotRunningError, ApiTimeoutError):
        return info
