"""Register Conductor's deployments (``work_pools.deployments``) on a Prefect API, from sync
code: the client side of ``apply_deployments``."""

from __future__ import annotations

from uuid import UUID

from claude_conductor.client.connection import conductor_client, run_sync
from claude_conductor.settings import ConductorSettings
from claude_conductor.work_pools.deployments import DEPLOYMENTS, DeploymentDef, apply_deployments

__all__ = ["register_deployments"]


def register_deployments(
    settings: ConductorSettings, definitions: tuple[DeploymentDef, ...] = DEPLOYMENTS
) -> dict[str, UUID]:
    """Register every deployment on the API of ``settings`` (sync; see ``apply_deployments``)."""

    async def _go() -> dict[str, UUID]:
        async with conductor_client(settings) as client:
            return await apply_deployments(client, settings, definitions)

    return run_sync(_go())
