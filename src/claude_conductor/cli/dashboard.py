"""``conductor dashboard``: run the Streamlit dashboard in the foreground (``conductor up``
starts the same command in the background)."""

from __future__ import annotations

import importlib.util
import shlex
import subprocess

import typer

from claude_conductor.cli import _common
from claude_conductor.errors import InputError

__all__ = ["register"]

_STOP_GRACE_SECONDS = 10.0


def dashboard(
    host: str | None = typer.Option(
        None, "--host", help="Listen here (needs a dashboard password unless loopback)."
    ),
    port: int | None = typer.Option(None, "--port", min=1, max=65535, help="Listen on this port."),
    print_command: bool = typer.Option(
        False, "--print-command", help="Print the command that would run, and exit."
    ),
) -> int:
    """Open the dashboard: see, submit, follow and cancel agent work in a browser."""
    from claude_conductor.tiers.dashboard_launch import (
        bind_address,
        dashboard_argv,
        dashboard_env,
        is_loopback,
    )

    settings = _common.settings()
    argv = dashboard_argv(settings, host=host, port=port)
    if print_command:
        typer.echo(shlex.join(argv))
        return 0
    if importlib.util.find_spec("streamlit") is None:
        raise InputError("the dashboard needs Streamlit: pip install 'claude-conductor[dashboard]'")
    address = bind_address(settings, host)
    shown = "127.0.0.1" if address in {"0.0.0.0", "::"} else address
    url = f"http://{shown}:{port or settings.dashboard.port}"
    _common.console.print(f"Conductor dashboard on [bold]{url}[/] (Ctrl-C to stop)")
    if settings.dashboard.password is None:
        _common.console.print(
            "no dashboard password set: listening on 127.0.0.1 only "
            "(set CONDUCTOR_DASHBOARD_PASSWORD to require sign-in and serve other hosts)"
        )
    elif not is_loopback(address):
        _common.console.print(f"sign-in required; listening on {address}")
    proc = subprocess.Popen(argv, env=dashboard_env(settings))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        # Streamlit got the same Ctrl-C from the terminal; give it time to stop cleanly.
        try:
            proc.wait(timeout=_STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=_STOP_GRACE_SECONDS)
        return 130


def register(app: typer.Typer) -> None:
    app.command("dashboard")(dashboard)
