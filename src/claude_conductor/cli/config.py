"""``conductor config show|validate|export|import``: see and move a setup between tiers.

Exports never contain secrets (API keys, auth strings, passwords): set those again on the
target from its own environment or secret store.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
import yaml

from claude_conductor.cli import _common
from claude_conductor.errors import InputError

__all__ = ["exportable", "import_config", "register", "validate_config_data"]

config_app = typer.Typer(help="Show, check, export and import settings.", no_args_is_help=True)

_NOT_PORTABLE = {"home"}


def exportable(settings: Any) -> dict[str, Any]:
    """The settings as a portable document: no home path, no secrets (auth string, password,
    agent variables named like secrets, credentials in the API URL)."""
    from claude_conductor.settings import SECRET_SETTINGS, is_secret_name, strip_url_credentials

    data: dict[str, Any] = settings.model_dump(mode="json")
    for key in _NOT_PORTABLE:
        data.pop(key, None)
    for section, key in SECRET_SETTINGS:
        data.get(section, {}).pop(key, None)
    extra = data.get("agent", {}).get("extra_env", {})
    for name in [n for n in extra if is_secret_name(n)]:
        extra.pop(name)
    server = data.get("server", {})
    if isinstance(server.get("api_url"), str):
        server["api_url"] = strip_url_credentials(server["api_url"])
    return data


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
    if not path.is_file():
        raise InputError(f"{path}: no such file; give the path of a conductor config YAML file")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: invalid YAML ({exc})") from exc


def import_config(path: Path, home: Path) -> dict[str, Any]:
    """Validate ``path`` and merge it into ``home/config.yaml``; returns the merged document."""
    from claude_conductor.settings import config_path

    data = _read_yaml(path)
    validate_config_data(data, str(path))
    data = {k: v for k, v in (data or {}).items() if k not in _NOT_PORTABLE}
    target = config_path(home)
    current: dict[str, Any] = {}
    if target.is_file():
        current = yaml.safe_load(target.read_text(encoding="utf-8")) or {}
    merged = _deep_merge(current, data)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(merged, sort_keys=True), encoding="utf-8")
    tmp.replace(target)
    return merged


def _deep_merge(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


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
    text = "# claude-conductor config (secrets are not exported)\n" + yaml.safe_dump(
        exportable(_common.settings()), sort_keys=False
    )
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


@config_app.command("import")
def import_(
    file: Path = typer.Argument(..., help="A file made by `conductor config export`."),
) -> None:
    """Merge exported settings into this setup's config file."""
    from claude_conductor.settings import config_path, default_home

    import_config(file, default_home())
    _common.console.print(f"imported {file} into {config_path()}")


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
