"""The Tier contract: what every way of running Conductor (standalone, docker, kubernetes)
offers the CLI and the dashboard, and the one function that picks a tier by name.

A tier brings a stack up and down, reports its status, changes the number of agent slots and
says how scaling works there. The CLI and the dashboard only talk to tiers through
``get_tier(name)``; nothing branches on a module's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from claude_conductor.errors import InputError
from claude_conductor.settings import ConductorSettings
from claude_conductor.tiers.status import DaemonStatus, ScaleResult, StackInfo

__all__ = ["TIER_NAMES", "Tier", "UpOptions", "get_tier"]

TIER_NAMES = ("standalone", "docker", "kubernetes")


@dataclass(frozen=True)
class UpOptions:
    """What a user can ask of ``up`` on any tier (a tier ignores what it has no use for)."""

    agents: int | None = None
    offline_model: bool = False
    dashboard: bool | None = None


@runtime_checkable
class Tier(Protocol):
    """One way of running the stack."""

    name: str

    def up(self, settings: ConductorSettings, options: UpOptions) -> StackInfo:
        """Start what is missing (idempotent) and return when the stack is ready."""
        ...

    def down(self, settings: ConductorSettings, *, volumes: bool = False) -> list[DaemonStatus]:
        """Stop everything the tier started; history stays unless ``volumes``."""
        ...

    def status(self, settings: ConductorSettings) -> StackInfo:
        """Server health, pools, slots, busy and queued counts, the tier's processes."""
        ...

    def scale_agents(self, settings: ConductorSettings, agents: int) -> ScaleResult:
        """Set the number of agent slots, live."""
        ...

    def scaling_advice(self, settings: ConductorSettings) -> str:
        """One sentence: how agents scale on this tier (shown by the dashboard)."""
        ...


class _Standalone:
    name = "standalone"

    def up(self, settings: ConductorSettings, options: UpOptions) -> StackInfo:
        from claude_conductor.tiers.standalone import stack

        return stack.up(
            settings,
            options.agents,
            offline_model=options.offline_model,
            dashboard=options.dashboard,
        )

    def down(self, settings: ConductorSettings, *, volumes: bool = False) -> list[DaemonStatus]:
        from claude_conductor.tiers.standalone import stack

        return stack.down(settings)

    def status(self, settings: ConductorSettings) -> StackInfo:
        from claude_conductor.tiers.standalone import info

        return info.status(settings)

    def scale_agents(self, settings: ConductorSettings, agents: int) -> ScaleResult:
        from claude_conductor.tiers.standalone import stack

        return stack.scale_agents(settings, agents)

    def scaling_advice(self, settings: ConductorSettings) -> str:
        return "set the agent slots here or with `conductor agents scale N` (live)"


class _Docker:
    name = "docker"

    def up(self, settings: ConductorSettings, options: UpOptions) -> StackInfo:
        from claude_conductor.tiers.docker import stack

        return stack.up(settings, options.agents, offline_model=options.offline_model)

    def down(self, settings: ConductorSettings, *, volumes: bool = False) -> list[DaemonStatus]:
        from claude_conductor.tiers.docker import stack

        return stack.down(settings, remove_volumes=volumes)

    def status(self, settings: ConductorSettings) -> StackInfo:
        from claude_conductor.tiers.docker import stack

        return stack.status(settings)

    def scale_agents(self, settings: ConductorSettings, agents: int) -> ScaleResult:
        from claude_conductor.tiers.docker import stack

        return stack.scale_agents(settings, agents)

    def scaling_advice(self, settings: ConductorSettings) -> str:
        return (
            "each task runs in its own agent container, started by the compose service "
            "`worker`; the agent pool's slots (and the `worker` service's own limit) are how "
            "many run at once: `conductor agents scale N --tier docker` sets both and "
            "recreates `worker` (agent containers in flight keep running). "
            "Not `docker compose --scale`: one `worker` starts every agent container."
        )


_TIERS: dict[str, Tier] = {"standalone": _Standalone(), "docker": _Docker()}


def get_tier(name: str) -> Tier:
    """The tier called ``name``; InputError naming the known tiers otherwise."""
    if name == "kubernetes" and name not in _TIERS:
        try:
            from claude_conductor.tiers.kubernetes import tier as k8s
        except ImportError:
            pass
        else:
            _TIERS[name] = k8s.KubernetesTier()
    tier = _TIERS.get(name)
    if tier is None:
        known = ", ".join(_TIERS)
        hint = (
            ""
            if "kubernetes" in _TIERS
            else " (for kubernetes: kubectl apply -k deployments/kubernetes)"
        )
        raise InputError(
            f"tier {name!r} cannot be run by this command; use one of {known}{hint}",
            field="tier",
            value=name,
        )
    return tier
