"""Tasks: a filterable, sortable table; ``?task=<id>`` shows one task in detail."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from claude_conductor.dashboard import components, data, task_view

settings = components.settings()

_COLUMNS = [
    "task_id", "status", "title", "kind", "repo", "priority", "started", "duration_seconds",
    "cost_usd", "turns",
]  # fmt: skip

_CONFIG = {
    "task_id": st.column_config.TextColumn("task"),
    "title": st.column_config.TextColumn("title", width="medium"),
    "repo": st.column_config.TextColumn("repository"),
    "priority": st.column_config.NumberColumn("prio"),
    "started": st.column_config.DatetimeColumn("started (UTC)", format="MMM D, HH:mm:ss"),
    "duration_seconds": st.column_config.NumberColumn("duration (s)", format="%.1f"),
    "cost_usd": st.column_config.NumberColumn("cost", format="$%.4f"),
    "files_changed": st.column_config.NumberColumn("files"),
}


def _status_style(value: str) -> str:
    color = components.STATUS_COLORS.get(value)
    return f"color: {color}; font-weight: 600" if color else ""


def _filters(frame: pd.DataFrame) -> pd.DataFrame:
    c1, c2, c3, c4, c5 = st.columns([2, 2, 2, 3, 2])
    statuses = c1.multiselect("Status", sorted(frame["status"].unique()), key="f_status")
    kinds = c2.multiselect("Kind", sorted(frame["kind"].unique()), key="f_kind")
    repos = c3.multiselect("Repository", sorted(frame["repo"].unique()), key="f_repo")
    text = c4.text_input("Search", placeholder="task id, title or error", key="f_text")
    low, high = c5.slider("Priority", 1, 10, (1, 10), key="f_priority")
    shown = frame
    if statuses:
        shown = shown[shown["status"].isin(statuses)]
    if kinds:
        shown = shown[shown["kind"].isin(kinds)]
    if repos:
        shown = shown[shown["repo"].isin(repos)]
    if text.strip():
        needle = text.strip().lower()
        hay = shown["task_id"] + " " + shown["title"] + " " + shown["error"]
        shown = shown[hay.str.lower().str.contains(needle, regex=False)]
    return shown[(shown["priority"] >= low) & (shown["priority"] <= high)]


@st.fragment(run_every=components.REFRESH_SECONDS)
def _table() -> None:
    frame = components.fetch(data.fetch_tasks, settings)
    if frame is None:
        return
    if frame.empty:
        st.info("No tasks yet. Submit one on the **Submit** page.", icon=":material/inbox:")
        return
    shown = _filters(frame)
    components.now_caption()
    st.caption(f"{len(shown)} of {len(frame)} tasks · select a row to open it")
    event = st.dataframe(
        shown[_COLUMNS].style.map(_status_style, subset=["status"]),
        hide_index=True,
        column_config=_CONFIG,
        on_select="rerun",
        selection_mode="single-row",
        key="tasks_table",
        height=min(38 + 35 * max(len(shown), 3), 640),
    )
    rows = event.selection.rows if event is not None else []
    if rows:
        components.open_task(str(shown.iloc[rows[0]]["task_id"]))
    choice = st.selectbox(
        "Open a task",
        ["", *shown["task_id"].tolist()],
        key="open_task",
        format_func=lambda t: t or "choose a task id…",
    )
    if choice:
        components.open_task(choice)


task_id = st.query_params.get("task")
if task_id:
    task_view.render(settings, task_id)
else:
    st.title("Tasks")
    _table()
