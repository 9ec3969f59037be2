"""``<home>/config.yaml``: the one reader and writer of Conductor's config file.

Every write is atomic (a temporary file in the same folder, then a rename) and leaves the file
at mode 0600, because it may hold the Prefect API's auth string (``conductor up --tier docker``
writes it there). ``merge_config`` is what ``conductor config import`` does: the imported
settings are merged into the file, keeping what it already holds. ``portable`` turns the
settings' data into a document another setup can import: no home folder, no secrets.

It works on plain data (a settings object's ``model_dump(mode="json")``); checking a document
against ``ConductorSettings`` is the caller's job (``settings`` imports this module).
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

import yaml

from claude_conductor.errors import InputError
from claude_conductor.redaction import SECRET_SETTINGS, is_secret_name, strip_url_credentials

__all__ = [
    "CONFIG_FILE_MODE",
    "EXPORT_HEADER",
    "NOT_PORTABLE",
    "config_path",
    "deep_merge",
    "edit_config",
    "export_yaml",
    "load_document",
    "merge_config",
    "portable",
    "read_config",
    "write_config",
]

CONFIG_FILE_MODE = 0o600
NOT_PORTABLE = frozenset({"home"})
"""Top-level settings that describe this machine, not a setup: never exported or imported."""
EXPORT_HEADER = "# claude-conductor config (secrets are not exported)\n"


def config_path(home: Path) -> Path:
    """``<home>/config.yaml``."""
    return home / "config.yaml"


def _parse(text: str, source: str, fix: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{source}: not valid YAML ({exc}); {fix}") from exc


def read_config(home: Path) -> dict[str, Any]:
    """The file's settings as a mapping (empty when there is no file). InputError when it is
    not YAML or not a mapping."""
    path = config_path(home)
    if not path.is_file():
        return {}
    data = _parse(path.read_text(encoding="utf-8"), str(path), "fix or remove the file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of settings, found {type(data).__name__}")
    return data


def write_config(home: Path, data: Mapping[str, Any], *, sort_keys: bool = False) -> Path:
    """Replace the file with ``data``: atomically, mode 0600 from the first byte."""
    path = config_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(dict(data), sort_keys=sort_keys)
    fd, tmp_name = tempfile.mkstemp(prefix=".config.yaml.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, CONFIG_FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def edit_config(home: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """Apply ``edit(data)`` to the file's settings and write them back (0600)."""
    data = read_config(home)
    edit(data)
    return write_config(home, data)


def deep_merge(base: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``new`` on top, mappings merged key by key."""
    out = dict(base)
    for key, value in new.items():
        current = out.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            out[key] = deep_merge(current, value)
        else:
            out[key] = value
    return out


def merge_config(home: Path, data: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``data`` (machine-specific keys left out) into the file; returns the result."""
    incoming = {k: v for k, v in data.items() if k not in NOT_PORTABLE}
    merged = deep_merge(read_config(home), incoming)
    write_config(home, merged, sort_keys=True)
    return merged


def load_document(source: str, stdin: TextIO) -> Any:
    """A config document to import: from the file ``source``, or standard input for ``-``."""
    if source == "-":
        return _parse(stdin.read(), "<stdin>", "give a file made by `conductor config export`")
    path = Path(source)
    if not path.is_file():
        raise InputError(
            f"{path}: no such file; give the path of a conductor config YAML file",
            field="file",
            value=source,
        )
    return _parse(path.read_text(encoding="utf-8"), str(path), "fix the file")


def portable(data: Mapping[str, Any]) -> dict[str, Any]:
    """Settings data as a portable document: no home path, no secrets (auth string, password,
    agent variables named like secrets, credentials in the API URL)."""
    out: dict[str, Any] = copy.deepcopy(dict(data))
    for key in NOT_PORTABLE:
        out.pop(key, None)
    for section, key in SECRET_SETTINGS:
        if isinstance(out.get(section), dict):
            out[section].pop(key, None)
    agent = out.get("agent")
    extra = agent.get("extra_env") if isinstance(agent, dict) else None
    if isinstance(extra, dict):
        for name in [n for n in extra if is_secret_name(n)]:
            extra.pop(name)
    server = out.get("server")
    if isinstance(server, dict) and isinstance(server.get("api_url"), str):
        server["api_url"] = strip_url_credentials(server["api_url"])
    return out


def export_yaml(data: Mapping[str, Any]) -> str:
    """``portable(data)`` as the YAML text ``conductor config export`` prints."""
    return EXPORT_HEADER + yaml.safe_dump(portable(data), sort_keys=False)
