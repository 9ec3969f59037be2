"""Why a flow run's agent was stopped: by the user (`conductor tasks cancel`, Prefect's UI) or
by `conductor down` stopping the whole stack.

Both reach the flow-run process as the same signal, so ``conductor down`` leaves a note in
``<run_dir>/stopping.json`` (with its own PID) before it signals the runs, and removes it when
it is done; a run stopped while that note is there, and its writer is alive, says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from claude_conductor.settings import ConductorSettings
from claude_conductor.system.processes import is_live

__all__ = [
    "CANCELLED_BY_USER",
    "STOPPED_BY_DOWN",
    "clear_stopping",
    "mark_stopping",
    "stop_reason",
]

CANCELLED_BY_USER = "cancelled by the user"
STOPPED_BY_DOWN = (
    "stopped by `conductor down` while it ran (the agent was stopped, its work so far kept "
    "on the branch); run it again with `conductor tasks retry`"
)


def _note(settings: ConductorSettings) -> Path:
    return settings.run_dir / "stopping.json"


def mark_stopping(settings: ConductorSettings) -> None:
    """Before ``down`` signals the flow runs: runs stopped from now on were stopped by it."""
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    _note(settings).write_text(json.dumps({"pid": os.getpid()}), encoding="utf-8")


def clear_stopping(settings: ConductorSettings) -> None:
    _note(settings).unlink(missing_ok=True)


def stop_reason(settings: ConductorSettings) -> str:
    """What stopped this run: ``STOPPED_BY_DOWN`` while a live ``down`` left its note, else
    ``CANCELLED_BY_USER``."""
    try:
        pid = int(json.loads(_note(settings).read_text(encoding="utf-8"))["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return CANCELLED_BY_USER
    return STOPPED_BY_DOWN if is_live(pid) else CANCELLED_BY_USER
