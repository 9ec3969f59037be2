"""Schedules for the dashboard's Schedules page: read them (cached briefly) and pause, resume
or remove one, through ``client.schedules``. No Streamlit here.
"""

from __future__ import annotations

import pandas as pd

from claude_conductor.client import schedules as schedule_api
from claude_conductor.client.tasks import api_client
from claude_conductor.dashboard.cache import cached, clear_cache, run_sync
from claude_conductor.settings import ConductorSettings

__all__ = ["COLUMNS", "fetch_schedules", "remove", "schedules_frame", "set_active"]

COLUMNS = ["name", "state", "when", "next_run", "last_run", "kind", "task", "repo"]


def schedules_frame(infos: list[schedule_api.ScheduleInfo]) -> pd.DataFrame:
    """One row per schedule, in the page's columns (pure)."""
    rows = [
        {
            "name": i.name,
            "state": "active" if i.active else "paused",
            "when": i.timing,
            "next_run": pd.Timestamp(i.next_run) if i.next_run and i.active else pd.NaT,
            "last_run": i.last_state or "",
            "kind": i.kind or "",
            "task": i.title,
            "repo": i.repo or "",
        }
        for i in infos
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


async def _read(settings: ConductorSettings) -> list[schedule_api.ScheduleInfo]:
    async with api_client(settings) as client:
        return await schedule_api.list_schedules(client)


def fetch_schedules(settings: ConductorSettings) -> list[schedule_api.ScheduleInfo]:
    """Every schedule on the API (cached for a couple of seconds)."""
    return cached(settings, ("schedules",), lambda: _read(settings))


def set_active(settings: ConductorSettings, name: str, active: bool) -> str:
    """Pause or resume a schedule; the message to show."""

    async def go() -> schedule_api.ScheduleInfo:
        async with api_client(settings) as client:
            return await schedule_api.set_schedule_active(client, name, active)

    info = run_sync(go)
    clear_cache()
    if active:
        return f"Resumed {info.name!r}: {info.timing}."
    return f"Paused {info.name!r}: it starts no new runs until resumed."


def remove(settings: ConductorSettings, name: str) -> str:
    """Delete a schedule; the message to show."""

    async def go() -> schedule_api.ScheduleInfo:
        async with api_client(settings) as client:
            return await schedule_api.remove_schedule(client, name)

    info = run_sync(go)
    clear_cache()
    return f"Removed {info.name!r} ({info.deployment}); its finished runs stay in the history."
