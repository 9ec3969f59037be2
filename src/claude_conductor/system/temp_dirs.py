"""Where agents' temp folders live and how they are named: ``/tmp/ccd-<hex>`` (short: the
``claude`` CLI keeps sockets in it and, past about 30 bytes, falls back to a temp folder every
agent of the user shares). In a forked flow run the run's supervisor sets ``RUN_TEMP_TAG_ENV``
in the engine: its agents' folders are ``/tmp/ccd-<tag><hex>``, so the supervisor removes them
when the engine was killed before it could (``remove_run_temp_dirs``)."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

__all__ = ["RUN_TEMP_TAG_ENV", "new_run_tag", "new_temp_dir", "remove_run_temp_dirs"]

RUN_TEMP_TAG_ENV = "CONDUCTOR_RUN_TEMP_TAG"
_PREFIX = "ccd-"


def _base() -> Path:
    return Path("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()).resolve()


def _is_run_tag(tag: str) -> bool:
    return len(tag) == 7 and tag[0] == "r" and all(c in "0123456789abcdef" for c in tag[1:])


def new_run_tag() -> str:
    """A tag for one flow run's temp folders: ``r`` and 6 hex digits (an untagged folder's
    name is hex only, so no tag's glob ever matches it)."""
    return "r" + secrets.token_hex(3)


def new_temp_dir() -> Path:
    """A fresh name for one agent's temp folder (tagged with its run when the run has a tag)."""
    tag = os.environ.get(RUN_TEMP_TAG_ENV, "")
    return _base() / f"{_PREFIX}{tag if _is_run_tag(tag) else ''}{secrets.token_hex(4)}"


def remove_run_temp_dirs(tag: str) -> None:
    """Remove the temp folders of the agents of the run tagged ``tag``."""
    if _is_run_tag(tag):
        for path in _base().glob(f"{_PREFIX}{tag}*"):
            shutil.rmtree(path, ignore_errors=True)
