"""``conductor up|down|status`` and ``conductor agents scale``: the stack of a tier."""

from __future__ import annotations

from typing import Any

import typer

from claude_conductor.cli import _common
from claude_conductor.errors import InputError

__all__ = ["register"]

agents_app = typer.Typer(help="Agent slots: how many tasks run at once.", no_args_is_help=True)

_TIERS = ("standalone", "docker")


def _tier_module(tier: str | None, settings: Any) -> Any:
    name = tier or settings.tier
    if name not in _TIERS:
        raise InputError(
            f"tier {name!r} cannot be run by this command; use one of {', '.join(_TIERS)} "
            "(for kubernetes: kubectl apply -k deployments/kubernetes)",
            field="tier",
            value=name,
        )
    if name == "docker":
        from claude_conductor.tiers import docker

        return docker
    from claude_conductor.tiers import standalone

    return standalone


def _print_info(info: Any, *, as_json: bool) -> None:
    if as_json:
        _common.print_json(info.model_dump(mode="json"))
        return
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    health = "[green]healthy[/]" if info.healthy else "[red]not answering[/]"
    table.add_row("tier", info.tier)
    table.add_row("server", f"{info.api_url}  {health}")
    table.add_row("Prefect UI", info.ui_url)
    if info.dashboard_url:
        table.add_row("dashboard", info.dashboard_url)
    slots = "?" if info.agents is None else str(info.agents)
    table.add_row(
        "agents", f"{info.busy_slots}/{slots} busy, {info.queued} queued, {info.running} running"
    )
    for pool in info.pools:
        table.add_row(
            f"pool {pool.name}",
            f"{pool.workers_online} worker(s) online, slots {pool.slots or 'unlimited'}, "
            f"busy {pool.busy}, queued {pool.queued}"
            + (" [yellow](paused)[/]" if pool.paused else ""),
        )
    for daemon in info.daemons:
        if not daemon.running:
            state = "[red]stopped[/]"
        else:
            state = "running" if daemon.pid is None else f"pid {daemon.pid}"
        table.add_row(f"  {daemon.name}", state)
    if info.started:
        table.add_row("started", ", ".join(info.started))
    if info.already_running:
        table.add_row("already running", ", ".join(info.already_running))
    _common.console.print(table)


def up(
    agents: int | None = typer.Option(None, "--agents", "-n", help="Agent slots (tasks at once)."),
    tier: str | None = typer.Option(None, "--tier", help="standalone (default) or docker."),
    offline: bool = typer.Option(
        False, "--offline-model", help="Point agents at the scripted local model (no API key)."
    ),
    no_dashboard: bool = typer.Option(False, "--no-dashboard", help="Do not start the dashboard."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Bring the stack up (idempotent): server, work pools, deployments, workers, dashboard."""
    settings = _common.settings()
    module = _tier_module(tier, settings)
    if agents is not None and agents < 1:
        raise InputError(
            f"--agents {agents}: give at least 1 agent slot", field="agents", value=agents
        )
    if module.__name__.endswith("docker"):
        info = module.up(settings, agents, offline_model=offline)
    else:
        info = module.up(
            settings, agents, offline_model=offline, dashboard=False if no_dashboard else None
        )
    _print_info(info, as_json=as_json)


def down(
    tier: str | None = typer.Option(None, "--tier", help="standalone (default) or docker."),
    volumes: bool = typer.Option(
        False, "--volumes", help="docker tier: also delete the database and home volumes."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Stop everything the stack started (gracefully, then forcefully). History is kept."""
    settings = _common.settings()
    module = _tier_module(tier, settings)
    if module.__name__.endswith("docker"):
        stopped = module.down(settings, remove_volumes=volumes)
    else:
        stopped = module.down(settings)
    if as_json:
        _common.print_json([d.model_dump(mode="json") for d in stopped])
        return
    names = ", ".join(d.name for d in stopped) or "nothing was running"
    _common.console.print(f"stopped: {names}")


def status(
    tier: str | None = typer.Option(None, "--tier", help="standalone (default) or docker."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> int:
    """Server health, agents (slots, busy), queued and running counts."""
    settings = _common.settings()
    info = _tier_module(tier, settings).status(settings)
    _print_info(info, as_json=as_json)
    if not info.healthy and not as_json:
        flag = f" --tier {info.tier}" if info.tier != "standalone" else ""
        _common.err_console.print(f"the server is not running: start it with `conductor up{flag}`")
    return 0 if info.healthy else 1


@agents_app.command("scale", context_settings={"ignore_unknown_options": True})
def scale(
    count: int = typer.Argument(..., help="The new number of agent slots (at least 1)."),
    tier: str | None = typer.Option(None, "--tier", help="standalone (default) or docker."),
) -> None:
    """Change how many tasks run at once, live (runs in flight keep going)."""
    settings = _common.settings()
    if count < 1:
        raise InputError(
            f"agents scale {count}: give at least 1 agent slot (to stop all agents: conductor down)",
            field="agents",
            value=count,
        )
    module = _tier_module(tier, settings)
    _common.console.print(str(module.scale_agents(settings, count)))


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("down")(down)
    app.command("stop", help="The same as `conductor down` (the design's name for it).")(down)
    app.command("status")(status)
    app.add_typer(agents_app, name="agents")
