"""``conductor config show|validate|export|import``: see and move a setup between tiers.

Exports never contain secrets (API keys, auth strings, passwords): set those again on the
target from its own environment or secret store.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any, TextIO

import click
import typer
import yaml

from claude_conductor import config_file
from claude_conductor.cli import _common
from claude_conductor.errors import InputError

__all__ = ["exportable", "import_config", "register", "validate_config_data"]

config_app = typer.Typer(help="Show, check, export and import settings.", no_args_is_help=True)


def exportable(settings: Any) -> dict[str, Any]:
    """The settings as a portable document (see ``config_file.portable``)."""
    return config_file.portable(settings.model_dump(mode="json"))


def validate_config_data(data: Any, source: str) -> Any:
    """Check a config document; returns the settings it would give. InputError when invalid."""
    from pydantic import ValidationError

    from claude_conductor.settings import ConductorSettings

    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError(f"{source}: a config file must be a YAML mapping of settings")
    known = set(ConductorSettings.model_fields)
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(
            f"{source}: unknown setting {unknown[0]!r}; known settings: {', '.join(sorted(known))}",
            field=unknown[0],
        )
    try:
        return ConductorSettings.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InputError(
            f"{source}: setting {where!r} = {err.get('input')!r}: {err['msg']}", field=where
        ) from exc


def _read_yaml(path: Path) -> Any:
    return config_file.load_document(str(path), sys.stdin)


def import_config(source: Path | str, home: Path, stdin: TextIO | None = None) -> dict[str, Any]:
    """Validate ``source`` (a file, or ``-`` for standard input) and merge it into
    ``home/config.yaml``; returns the merged document."""
    shown = "<stdin>" if str(source) == "-" else str(source)
    data = config_file.load_document(str(source), stdin or sys.stdin)
    validate_config_data(data, shown)
    return config_file.merge_config(home, data or {})


@config_app.command("show")
def show(as_json: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """The effective settings (environment, config file, defaults), secrets masked."""
    settings = _common.settings()
    data = settings.public_dict()
    if as_json:
        _common.print_json(data)
    else:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))


@config_app.command("validate")
def validate(
    file: Path | None = typer.Argument(None, help="A config file; default the active one."),
) -> None:
    """Check a config file (or the active settings) and say what is wrong."""
    from claude_conductor.settings import config_path

    if file is None:
        _common.settings()
        _common.console.print(f"ok: settings are valid ({config_path()})")
        return
    validate_config_data(_read_yaml(file), str(file))
    _common.console.print(f"ok: {file} is a valid conductor config")


@config_app.command("export")
def export(
    output: Path | None = typer.Option(None, "--output", "-o", help="Write here, not stdout."),
) -> None:
    """Print the settings as YAML to move them to another setup (no secrets)."""
    text = config_file.export_yaml(_common.settings().model_dump(mode="json"))
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


@config_app.command("import")
def import_(
    file: str | None = typer.Argument(
        None,
        help="A file made by `conductor config export`; `-` or none to read standard input "
        "(`conductor config import < config.backup.yaml`).",
        show_default=False,
    ),
) -> None:
    """Merge exported settings into this setup's config file (kept at mode 0600)."""
    from claude_conductor.settings import config_path, default_home

    if file is None or file == "-":
        try:
            piped = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
        except (OSError, ValueError):  # no readable standard input (closed, captured)
            piped = ""
        if not piped.strip():
            raise _common._TyperUsageError(  # type: ignore[attr-defined]
                "Missing argument 'FILE': give the file to import, or pipe one in "
                "(`conductor config import < config.backup.yaml`, or `... | conductor config "
                "import -`); nothing came on standard input",
                ctx=_current_context(),
            )
        import_config("-", default_home(), io.StringIO(piped))
        _common.console.print(f"imported standard input into {config_path()}")
        return
    import_config(file, default_home())
    _common.console.print(f"imported {file} into {config_path()}")


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")


def _current_context() -> Any:
    """The running command's context (Typer's vendored Click, else Click's own)."""
    try:
        from typer._click import get_current_context  # type: ignore[attr-defined]
    except ImportError:
        return click.get_current_context(silent=True)
    return get_current_context(silent=True)
