"""The detail view of one task (the Tasks page with ``?task=<id>``): status and timeline, the
agent's transcript, live logs, the diff, verify output, the report, cancel and retry.

While the task runs, the header and logs refresh themselves; when it ends, the whole view is
drawn once more and stops polling.
"""

from __future__ import annotations

import json

import pandas as pd
import plotly.express as px
import streamlit as st
import yaml

from claude_conductor.dashboard import components, data
from claude_conductor.dashboard.transcript import TranscriptEntry
from claude_conductor.errors import ConductorError
from claude_conductor.settings import ConductorSettings

__all__ = ["LIVE_REFRESH_SECONDS", "render"]

LIVE_REFRESH_SECONDS = 3
_LIVE_KEY = "conductor_live_task"
_MAX_ENTRIES = 400
_STATE_COLORS = {
    "SCHEDULED": "#b8c4d6",
    "PENDING": "#9ab0cf",
    "PAUSED": "#b8c4d6",
    "RUNNING": "#2f7de1",
    "CANCELLING": "#b0b0b0",
    "CANCELLED": "#8c8c8c",
    "COMPLETED": "#2e9e5b",
    "FAILED": "#d64545",
    "CRASHED": "#a32020",
}


def _back() -> None:
    st.query_params.pop("task", None)


def render(settings: ConductorSettings, task_id: str) -> None:
    st.button("All tasks", icon=":material/arrow_back:", on_click=_back, type="tertiary")
    detail = components.fetch(data.fetch_detail, settings, task_id)
    if detail is None:
        return
    every = None if detail.is_final else LIVE_REFRESH_SECONDS
    if every:
        st.session_state[_LIVE_KEY] = task_id
    else:
        st.session_state.pop(_LIVE_KEY, None)

    @st.fragment(run_every=every)
    def header() -> None:
        now = components.fetch(data.fetch_detail, settings, task_id)
        if now is None:
            return
        if now.is_final and st.session_state.get(_LIVE_KEY) == task_id:
            st.rerun()  # it just ended: draw everything once more, then stop polling
        _header(settings, now)

    @st.fragment(run_every=every)
    def logs() -> None:
        now = components.fetch(data.fetch_detail, settings, task_id)
        if now is not None:
            _logs(now, live=every is not None)

    header()
    files = len(detail.files)
    labels = [
        f"Diff ({files} file{'s' if files != 1 else ''})",
        f"Transcript ({len(detail.transcript)})",
        "Logs",
        "Timeline",
        "Verify",
        "Report",
        "Spec",
    ]
    # While it runs, open on the live logs; once it ended, on what it changed.
    tabs = st.tabs(labels, default=labels[0] if detail.is_final else "Logs")
    with tabs[0]:
        _diff(detail)
    with tabs[1]:
        _transcript(detail)
    with tabs[2]:
        logs()
    with tabs[3]:
        _timeline(detail)
    with tabs[4]:
        _verify(detail)
    with tabs[5]:
        if detail.report_markdown:
            st.markdown(detail.report_markdown)
        else:
            st.caption("The report is published when the task ends.")
    with tabs[6]:
        _spec(detail)


def _header(settings: ConductorSettings, detail: data.TaskDetail) -> None:
    row = detail.row
    st.title(row["title"] or detail.task_id)
    st.markdown(
        f"{components.status_badge(row['status'])} &nbsp; :gray-badge[{row['kind']}] &nbsp; "
        f":gray-badge[priority {row['priority']}] &nbsp; `{detail.task_id}`"
    )
    where = f"`{row['repo']}`" + (f" @ `{row['ref']}`" if row["ref"] else "")
    if row["branch"]:
        where += f" → branch `{row['branch']}`"
    if row["worker"]:
        where += f" · worker `{row['worker']}`"
    st.caption(f"{where} · Prefect state **{row['state']}**")

    buttons = st.container(horizontal=True)
    if not detail.is_final:
        stopping = row["status"] == "cancelling"
        if buttons.button(
            "Cancelling…" if stopping else "Cancel",
            icon=":material/stop_circle:",
            type="primary",
            disabled=stopping,
            help="Cancellation was asked for; the worker is stopping the agent."
            if stopping
            else "Stop the agent and end this task as cancelled.",
        ):
            try:
                state = data.cancel(settings, detail.task_id)
            except ConductorError as exc:
                st.error(str(exc))
            else:
                st.toast(f"Cancelling {detail.task_id} ({state})")
                st.rerun()
    elif buttons.button("Retry", icon=":material/replay:", help="Run it again as a new task."):
        try:
            new = data.retry(settings, detail.task_id)
        except ConductorError as exc:
            st.error(str(exc))
        else:
            components.open_task(new.task_id)
    buttons.link_button("Prefect UI", detail.prefect_url, icon=":material/open_in_new:")

    result = detail.result
    tiles = components.tile_row()
    tiles.metric(
        "Duration",
        components.fmt_duration(row["duration_seconds"]),
        border=True,
        width=components.TILE_WIDTH,
    )
    tiles.metric(
        "Cost",
        components.fmt_cost(row["cost_usd"]),
        border=True,
        width=components.TILE_WIDTH,
        help=f"${row['cost_usd']:.6f} as reported by the agent",
    )
    tiles.metric("Turns", row["turns"], border=True, width=components.TILE_WIDTH)
    tiles.metric(
        "Tokens",
        components.fmt_tokens(row["tokens"]),
        border=True,
        width=components.TILE_WIDTH,
        help=f"{row['input_tokens']:,} in (cache included) / {row['output_tokens']:,} out",
    )
    stats = result.diff_stats if result else None
    tiles.metric(
        "Files changed",
        row["files_changed"],
        border=True,
        width=components.TILE_WIDTH,
        help=f"+{stats.insertions} -{stats.deletions} lines" if stats else None,
    )
    if result is not None and result.error:
        st.error(result.error, icon=":material/error:")
    if result is not None and result.summary.strip():
        with st.container(border=True):
            st.markdown("**Summary**")
            st.markdown(result.summary)


def _diff(detail: data.TaskDetail) -> None:
    if not detail.files:
        st.caption(
            "No changes on the branch." if detail.is_final else "The diff appears when it ends."
        )
        return
    table = pd.DataFrame(
        [
            {"file": f.path, "change": f.status, "added": f.insertions, "removed": f.deletions}
            for f in detail.files
        ]
    )
    st.dataframe(table, hide_index=True, key="diff_files")
    st.download_button(
        "Download patch",
        detail.diff,
        file_name=f"{detail.task_id}.patch",
        mime="text/x-diff",
        icon=":material/download:",
    )
    for f in detail.files:
        label = f"`{f.path}` :green[+{f.insertions}] :red[-{f.deletions}]"
        with st.expander(label, expanded=len(detail.files) <= 6, icon=":material/difference:"):
            st.code(f.text, language="diff")


def _entry(entry: TranscriptEntry) -> None:
    if entry.kind == "text":
        with st.chat_message("assistant"):
            st.markdown(entry.body or entry.title)
    elif entry.kind == "tool":
        icon = ":material/error:" if entry.is_error else ":material/build:"
        with st.expander(entry.title, icon=icon):
            if entry.tool_input:
                st.caption("Input")
                st.code(json.dumps(entry.tool_input, indent=2, ensure_ascii=False), "json")
            if entry.output is not None:
                st.caption("Error" if entry.is_error else "Result")
                st.code(entry.output or "(empty)", language=None, wrap_lines=True)
    elif entry.kind == "result":
        (st.error if entry.is_error else st.success)(entry.title, icon=":material/flag:")
        if entry.body:
            st.markdown(entry.body)
    elif entry.kind == "denied":
        st.warning(entry.title, icon=":material/gpp_bad:")
    else:
        st.caption(
            f":material/terminal: {entry.title}" + (f" — {entry.body}" if entry.body else "")
        )


def _transcript(detail: data.TaskDetail) -> None:
    if detail.transcript_source == "none":
        st.caption("No agent events yet." if not detail.is_final else "This task ran no agent.")
        return
    source = (
        "the transcript file" if detail.transcript_source == "file" else "the run's logs (summary)"
    )
    st.caption(f"From {source} · tool calls fold open")
    entries = detail.transcript
    if len(entries) > _MAX_ENTRIES:
        st.caption(f"Showing the last {_MAX_ENTRIES} of {len(entries)} events.")
        entries = entries[-_MAX_ENTRIES:]
    for entry in entries:
        _entry(entry)


def _logs(detail: data.TaskDetail, *, live: bool) -> None:
    if live:
        components.now_caption(LIVE_REFRESH_SECONDS)
    if detail.logs.empty:
        st.caption("No logs yet.")
        return
    lines = [
        f"{at:%H:%M:%S} {level:<7} {message}"
        for at, level, message in detail.logs[["at", "level", "message"]].itertuples(index=False)
    ]
    st.code("\n".join(lines), language=None, height=460, wrap_lines=True)


def _timeline(detail: data.TaskDetail) -> None:
    timeline = detail.timeline
    if timeline.empty:
        st.caption("No state changes recorded.")
        return
    chart = timeline.copy()
    # A final state has no end: draw it as a thin mark, 2% of the run's span wide.
    span = (chart["until"].max() if chart["until"].notna().any() else chart["at"].max()) - chart[
        "at"
    ].min()
    mark = max(span * 0.02, pd.Timedelta(milliseconds=20))
    chart["until"] = chart["until"].fillna(chart["at"] + mark)
    fig = px.timeline(
        chart,
        x_start="at",
        x_end="until",
        y="state",
        color="type",
        color_discrete_map=_STATE_COLORS,
    )
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(**components.plotly_layout(height=60 + 36 * len(chart)), showlegend=False)
    st.plotly_chart(fig, key="timeline", config={"displayModeBar": False})
    st.dataframe(
        timeline[["state", "at", "seconds", "message"]],
        hide_index=True,
        column_config={
            "at": st.column_config.DatetimeColumn("at (UTC)", format="HH:mm:ss.SSS"),
            "seconds": st.column_config.NumberColumn("time in state (s)", format="%.1f"),
        },
        key="timeline_table",
    )


def _verify(detail: data.TaskDetail) -> None:
    verify = detail.result.verify if detail.result else None
    if verify is None:
        st.caption("No verify command ran." if detail.is_final else "Verify runs after the agent.")
        return
    ok = verify.exit_code == 0
    badge = ":green-badge[passed]" if ok else ":red-badge[failed]"
    extra = " (timed out)" if verify.timed_out else ""
    st.markdown(
        f"{badge} `{verify.command}` exited with **{verify.exit_code}**{extra} "
        f"in {components.fmt_duration(verify.duration_seconds)}"
    )
    st.code(verify.output_tail or "(no output)", language=None)


def _spec(detail: data.TaskDetail) -> None:
    if detail.spec is None:
        st.caption("This run has no readable task spec.")
        return
    shown = detail.spec.model_dump(mode="json", exclude_defaults=True)
    shown["id"] = detail.spec.id
    st.code(yaml.safe_dump(shown, sort_keys=False, allow_unicode=True), language="yaml")
