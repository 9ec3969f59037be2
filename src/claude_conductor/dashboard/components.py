"""Streamlit pieces the pages share: settings, error display, status badges, formatting.

The pages are scripts run by ``st.navigation``; they import this module for anything used on
more than one page. Data comes from ``data``/``pools``, never from Prefect directly.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import pandas as pd
import streamlit as st

from claude_conductor.errors import ConductorError
from claude_conductor.models import TASK_KINDS
from claude_conductor.settings import ConductorSettings, load_settings

__all__ = [
    "KIND_COLORS",
    "REFRESH_SECONDS",
    "STATUS_COLORS",
    "TASKS_PAGE",
    "TILE_WIDTH",
    "fetch",
    "fmt_cost",
    "fmt_duration",
    "fmt_tokens",
    "now_caption",
    "open_task",
    "plotly_layout",
    "settings",
    "status_badge",
    "tile_row",
    "time_bars",
]

P = ParamSpec("P")
T = TypeVar("T")

REFRESH_SECONDS = 5
TILE_WIDTH = 150
"""Metric tiles have a fixed width and wrap onto a new row on narrow screens (equal columns
would cut their numbers short instead)."""
TASKS_PAGE = "views/tasks.py"

STATUS_COLORS: dict[str, str] = {
    "succeeded": "#2e9e5b",
    "failed": "#d64545",
    "timed_out": "#e8912d",
    "needs_attention": "#e3b420",
    "cancelled": "#8c8c8c",
    "cancelling": "#b0b0b0",
    "running": "#2f7de1",
    "queued": "#7d97c9",
}

KIND_COLORS: dict[str, str] = dict(
    zip(
        TASK_KINDS,
        ("#66c2a5", "#fc8d62", "#8da0cb", "#e78ac3", "#a6d854", "#b3b3b3"),
        strict=True,
    )
)

_BADGES: dict[str, tuple[str, str]] = {
    "succeeded": ("green", ":material/check_circle:"),
    "failed": ("red", ":material/error:"),
    "timed_out": ("orange", ":material/timer_off:"),
    "needs_attention": ("orange", ":material/warning:"),
    "cancelled": ("gray", ":material/block:"),
    "cancelling": ("gray", ":material/hourglass_empty:"),
    "running": ("blue", ":material/play_circle:"),
    "queued": ("violet", ":material/schedule:"),
}


def settings() -> ConductorSettings:
    """The effective settings; a clear error (and nothing else) when they are invalid."""
    try:
        return load_settings()
    except ConductorError as exc:
        st.error(f"Conductor's settings are invalid: {exc}", icon=":material/settings:")
        st.stop()


def fetch(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T | None:
    """Call a data function; on a ConductorError show its message and return None."""
    try:
        return fn(*args, **kwargs)
    except ConductorError as exc:
        st.error(str(exc), icon=":material/cloud_off:")
        return None


def status_badge(status: str) -> str:
    """Markdown for a coloured status badge."""
    color, icon = _BADGES.get(status, ("gray", ":material/help:"))
    return f":{color}-badge[{icon} {status.replace('_', ' ')}]"


def fmt_duration(seconds: float | None) -> str:
    """``8.4 s``, ``42 s``, ``2m 05s``, ``1h 02m``: short enough for a metric tile."""
    if seconds is None or pd.isna(seconds):
        return "-"
    total = round(float(seconds))
    if total < 60:
        return f"{float(seconds):.1f} s" if seconds < 10 else f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def fmt_cost(usd: float | None) -> str:
    """``$0``, ``$0.0012``, ``$0.173``, ``$12.34``, ``$1,234``: short enough for a tile."""
    if usd is None or pd.isna(usd):
        return "-"
    if usd == 0:
        return "$0"
    if usd < 0.01:
        return f"${usd:.4f}"
    if usd < 1:
        return f"${usd:.3f}"
    return f"${usd:,.2f}" if usd < 100 else f"${usd:,.0f}"


def fmt_tokens(tokens: float | None) -> str:
    """``800``, ``51.2k``, ``3.4M``."""
    if tokens is None or pd.isna(tokens):
        return "-"
    value = float(tokens)
    if value < 1000:
        return f"{value:.0f}"
    if value < 1_000_000:
        return f"{value / 1000:.1f}k"
    return f"{value / 1_000_000:.1f}M"


def now_caption(refresh_seconds: float | None = REFRESH_SECONDS) -> None:
    stamp = datetime.now(UTC).strftime("%H:%M:%S UTC")
    suffix = f" · refreshes every {refresh_seconds:g} s" if refresh_seconds else ""
    st.caption(f"Updated {stamp}{suffix}")


def tile_row() -> Any:
    """A row for metric tiles (``TILE_WIDTH`` wide each) that wraps when the page is narrow."""
    return st.container(horizontal=True, wrap=True, gap="small")


def open_task(task_id: str) -> None:
    """Go to a task's detail view."""
    st.switch_page(TASKS_PAGE, query_params={"task": task_id})


def time_bars(fig: Any, bucket: str, last: pd.Timestamp, buckets: int) -> None:
    """Bars one bucket wide, and an x axis showing the last ``buckets`` buckets."""
    step = pd.Timedelta(hours=1) if bucket == "h" else pd.Timedelta(days=1)
    fig.update_traces(width=step.total_seconds() * 1000 * 0.8, offset=0)
    fig.update_xaxes(
        range=[last - step * (buckets - 1), last + step],
        tickformat="%H:%M\n%b %d" if bucket == "h" else "%b %d",
    )


def plotly_layout(height: int = 280) -> dict[str, Any]:
    """Compact plotly layout shared by the charts."""
    return {
        "height": height,
        "margin": {"l": 10, "r": 10, "t": 10, "b": 10},
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0, "title": None},
        "xaxis_title": None,
        "yaxis_title": None,
    }
