"""The ``conductor`` command: one Typer app, one module per command group.

Errors a user can fix print one line and exit 2; a task that ran and did not succeed exits 1.
Heavy imports (Prefect, the runtime) happen inside commands so ``--help`` stays fast.
"""

from __future__ import annotations

import sys

import typer

from claude_conductor import __version__
from claude_conductor.cli import _common

__all__ = ["app", "main"]

app = typer.Typer(
    name="conductor",
    help="Run many Claude Code agents in parallel, orchestrated by Prefect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"claude-conductor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Run many Claude Code agents in parallel, orchestrated by Prefect."""


def _register() -> None:
    from claude_conductor.cli import demo, run

    run.register(app)
    demo.register(app)
    for name in (
        "stack",
        "tasks",
        "schedule",
        "agents",
        "config",
        "dashboard",
        "metrics",
        "deploy",
        "backup",
        "mcp",
    ):
        try:
            module = __import__(f"claude_conductor.cli.{name}", fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != f"claude_conductor.cli.{name}":
                raise
            continue
        module.register(app)


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script."""
    code = _common.invoke(app, argv if argv is not None else sys.argv[1:])
    sys.exit(code)


if __name__ == "__main__":
    main()
