"""The standalone tier: everything on this machine (Prefect server on SQLite, process workers,
the dashboard), started and stopped by PID.

``up``, ``down``, ``status`` and ``scale_agents`` are loaded on first use: whatever imports
this package for one small part (``info``, ``launch``) does not pay for the whole stack module
(Prefect's client, the flows)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from claude_conductor.tiers.standalone.stack import down, scale_agents, status, up

__all__ = ["down", "scale_agents", "status", "up"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("claude_conductor.tiers.standalone.stack"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
