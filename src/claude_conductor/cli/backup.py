"""``conductor backup`` and ``conductor restore``: the stack's history (Prefect database,
results and transcripts, config) to a folder and back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from claude_conductor.cli import _common
from claude_conductor.errors import InputError

__all__ = ["register"]

_TIERS = ("standalone", "docker")


def _tier(tier: str | None, settings: Any) -> str:
    name = str(tier or settings.tier)
    if name not in _TIERS:
        raise InputError(
            f"--tier {name!r}: backup and restore handle {', '.join(_TIERS)} (kubernetes: the "
            "backup CronJob of deployments/kubernetes)",
            field="tier",
            value=name,
        )
    return name


def backup(
    to: Path | None = typer.Option(
        None, "--to", help="A new folder for the backup (default <home>/backups/backup-<time>)."
    ),
    tier: str | None = typer.Option(None, "--tier", help="standalone (default) or docker."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Back up the stack's history while it runs: database, results, transcripts, config."""
    from claude_conductor.tiers import backup as backups

    settings = _common.settings()
    if _tier(tier, settings) == "docker":
        info = backups.backup_docker(settings, to)
    else:
        info = backups.backup_standalone(settings, to)
    if as_json:
        _common.print_json(info.model_dump(mode="json"))
        return
    runs = f", {info.flow_runs} runs" if info.flow_runs is not None else ""
    _common.console.print(
        f"backed up the {info.tier} stack to {info.path} "
        f"({info.database_bytes} bytes of database{runs}, {info.seconds:.1f}s); "
        f"restore with `conductor restore {info.path}`",
        highlight=False,
        soft_wrap=True,
    )


def restore(
    folder: Path = typer.Argument(..., help="A folder `conductor backup` wrote."),
    tier: str | None = typer.Option(None, "--tier", help="standalone (default) or docker."),
    replace: bool = typer.Option(
        False, "--replace", help="standalone: set the home's existing history aside first."
    ),
) -> None:
    """Restore a backup. Standalone: with the stack stopped; docker: into the running stack."""
    from claude_conductor.tiers import backup as backups

    settings = _common.settings()
    if _tier(tier, settings) == "docker":
        info = backups.restore_docker(settings, folder)
        after = "the docker stack runs on it now"
    else:
        info = backups.restore_standalone(settings, folder, replace=replace)
        after = "start the stack with `conductor up`"
    _common.console.print(
        f"restored the backup of {info.created_at:%Y-%m-%d %H:%M:%S} UTC into "
        f"{settings.home}; {after}",
        highlight=False,
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    app.command("backup")(backup)
    app.command("restore")(restore)
