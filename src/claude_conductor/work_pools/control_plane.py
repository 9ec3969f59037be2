"""What every stack's control plane gets besides its pools, registered by each tier's configure
step (docker: the ``configure`` service; kubernetes: the configure Job): Conductor's deployments,
its block types, and the automation that marks unresponsive flow runs Crashed. Idempotent."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification

from claude_conductor.credentials import register_block_types
from claude_conductor.settings import ConductorSettings
from claude_conductor.work_pools.deployments import apply_deployments

__all__ = [
    "ZOMBIE_AFTER_SECONDS",
    "ZOMBIE_AUTOMATION",
    "ensure_zombie_automation",
    "register_control_plane",
    "zombie_automation",
]

ZOMBIE_AUTOMATION = "conductor: crash unresponsive flow runs"
#: Heartbeats every 30 s (the minimum); a run silent for this long is marked Crashed.
ZOMBIE_AFTER_SECONDS = 90


def zombie_automation() -> AutomationCore:
    """Prefect's documented zombie detection: a running flow run that stops sending heartbeats
    (its container was killed while no worker watched it) is marked Crashed."""
    return AutomationCore(
        name=ZOMBIE_AUTOMATION,
        description="Marks a flow run Crashed when it has sent no heartbeat for "
        f"{ZOMBIE_AFTER_SECONDS}s (its engine died and no worker came back to say so).",
        enabled=True,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=ZOMBIE_AFTER_SECONDS),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {ZOMBIE_AFTER_SECONDS}s: the worker running it "
                "died without reporting (killed, out of memory, or its host restarted)",
            )
        ],
    )


def _automation_shape(automation: AutomationCore) -> dict[str, Any]:
    data = automation.model_dump(mode="json", include=set(AutomationCore.model_fields))
    trigger = data.get("trigger", {})
    trigger.pop("id", None)
    for key in ("after", "expect", "for_each"):  # sets: their order means nothing
        trigger[key] = sorted(trigger.get(key) or [])
    return data


async def ensure_zombie_automation(client: PrefectClient) -> UUID:
    """Create the zombie automation, or update it when it differs. An unchanged one is left
    alone: updating an automation resets its trigger, which would forget the heartbeats of runs
    in flight (``configure`` runs on every ``up`` and every worker start)."""
    wanted = zombie_automation()
    existing = await client.read_automations_by_name(ZOMBIE_AUTOMATION)
    if not existing:
        return await client.create_automation(wanted)
    current = existing[0]
    if _automation_shape(AutomationCore.model_validate(current.model_dump())) != _automation_shape(
        wanted
    ):
        await client.update_automation(current.id, wanted)
    for extra in existing[1:]:
        await client.delete_automation(extra.id)
    return current.id


async def register_control_plane(client: PrefectClient, settings: ConductorSettings) -> list[str]:
    """Deployments, block types and the zombie automation; what was done, one line each."""
    ids = await apply_deployments(client, settings)
    await register_block_types(client)
    await ensure_zombie_automation(client)
    return ["deployments: " + ", ".join(sorted(ids)), f"automation: {ZOMBIE_AUTOMATION}"]
