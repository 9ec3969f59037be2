"""``conductor schedule add|list|pause|resume|remove``: tasks that run by themselves, on
Prefect's own deployment schedules (``client.schedules``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from claude_conductor.cli import _common

__all__ = ["register"]

schedule_app = typer.Typer(
    help="Run a task file on a cron or an interval (Prefect deployment schedules).",
    no_args_is_help=True,
)


def _when(value: Any) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z") if value else "-"


def _print_info(verb: str, info: Any) -> None:
    state = "active" if info.active else "paused"
    _common.console.print(
        f"{verb} {info.name!r} ({info.deployment}): {info.timing}, {state}",
        highlight=False,
        markup=False,
    )


@schedule_app.command("add")
def add(
    task_file: Path = typer.Argument(..., help="The task YAML file to run on the schedule."),
    cron: str | None = typer.Option(
        None, "--cron", help='Cron expression, e.g. "0 2 * * *" (02:00 every day).'
    ),
    interval_seconds: float | None = typer.Option(
        None, "--interval", help="Run every this many seconds instead of on a cron."
    ),
    timezone: str | None = typer.Option(
        None, "--timezone", help="IANA time zone of the cron, e.g. Europe/Paris (default UTC)."
    ),
    name: str | None = typer.Option(
        None, "--name", help="The schedule's name (default: the task file's name)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Schedule a task file. It is checked exactly as `conductor run` checks it."""
    from claude_conductor.cli.run import build_spec
    from claude_conductor.client.schedules import (
        add_schedule,
        parse_timing,
        schedule_name,
        scheduled_parameters,
    )
    from claude_conductor.client.submission import check_sources
    from claude_conductor.client.tasks import api_client

    timing = parse_timing(cron=cron, interval_seconds=interval_seconds, timezone=timezone)
    chosen = schedule_name(name, task_file.stem)
    spec = build_spec(task_file, {})
    scheduled_parameters(spec)  # a fixed id is refused before anything is created
    check_sources(spec)
    settings = _common.settings()

    async def go() -> Any:
        async with api_client(settings) as client:
            return await add_schedule(client, settings, spec, timing, chosen)

    info = _common.run_sync(go())
    if as_json:
        _common.print_json(info.model_dump(mode="json"))
        return
    _print_info("scheduled", info)
    _common.console.print(
        "Prefect's scheduler creates its runs within seconds; they show in "
        "`conductor tasks list`. Pause it with: conductor schedule pause " + info.name,
        highlight=False,
        markup=False,
    )


@schedule_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """Every schedule, with its next run and its latest run's state."""
    from rich.table import Table

    from claude_conductor.client.schedules import list_schedules
    from claude_conductor.client.tasks import api_client

    async def go() -> Any:
        async with api_client(_common.settings()) as client:
            return await list_schedules(client)

    infos = _common.run_sync(go())
    if as_json:
        _common.print_json([i.model_dump(mode="json") for i in infos])
        return
    if not infos:
        _common.console.print(
            "No schedules. Add one with: conductor schedule add task.yaml --cron '0 2 * * *'"
        )
        return
    table = Table("name", "state", "when", "next run", "last run", "kind", "task")
    for i in infos:
        table.add_row(
            i.name,
            "active" if i.active else "paused",
            i.timing,
            _when(i.next_run) if i.active else "-",
            i.last_state or "-",
            i.kind or "-",
            (i.title or "")[:40],
        )
    _common.console.print(table)


def _toggle(name: str, active: bool) -> None:
    from claude_conductor.client.schedules import set_schedule_active
    from claude_conductor.client.tasks import api_client

    async def go() -> Any:
        async with api_client(_common.settings()) as client:
            return await set_schedule_active(client, name, active)

    _print_info("resumed" if active else "paused", _common.run_sync(go()))


@schedule_app.command("pause")
def pause(name: str = typer.Argument(..., help="The schedule's name.")) -> None:
    """Stop a schedule from starting new runs (runs waiting to start are dropped)."""
    _toggle(name, False)


@schedule_app.command("resume")
def resume(name: str = typer.Argument(..., help="The schedule's name.")) -> None:
    """Let a paused schedule fire again."""
    _toggle(name, True)


@schedule_app.command("remove")
def remove(name: str = typer.Argument(..., help="The schedule's name.")) -> None:
    """Delete a schedule (finished runs stay in the history)."""
    from claude_conductor.client.schedules import remove_schedule
    from claude_conductor.client.tasks import api_client

    async def go() -> Any:
        async with api_client(_common.settings()) as client:
            return await remove_schedule(client, name)

    info = _common.run_sync(go())
    _common.console.print(
        f"removed {info.name!r} ({info.deployment})", highlight=False, markup=False
    )


def register(app: typer.Typer) -> None:
    app.add_typer(schedule_app, name="schedule")
