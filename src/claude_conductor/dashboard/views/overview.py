"""Overview: agents, queue, outcomes, cost and tokens; refreshes itself without flicker."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from claude_conductor.dashboard import aggregates, components, data, pools

settings = components.settings()

st.title("Overview")


def _metrics(frame: pd.DataFrame, agents: pools.AgentsView | None) -> None:
    counts = aggregates.status_counts(frame)
    rate = aggregates.success_rate(frame)
    today = pd.Timestamp.now(tz="UTC").floor("D")
    per_day = aggregates.cost_per_day(frame)
    cost_today = (
        float(per_day.loc[per_day["day"] == today, "cost_usd"].sum()) if len(per_day) else 0
    )
    tokens_today = int(per_day.loc[per_day["day"] == today, "tokens"].sum()) if len(per_day) else 0
    tiles = components.tile_row()
    tiles.metric(
        "Agents online",
        agents.workers_online if agents else "-",
        border=True,
        width=components.TILE_WIDTH,
        help="Workers that sent a heartbeat recently, over all pools.",
    )
    tiles.metric(
        "Busy slots",
        f"{agents.agent_busy} / {agents.agent_slots}" if agents else "-",
        border=True,
        width=components.TILE_WIDTH,
        help="Agent slots running a task / all agent slots (fan-out parents wait in their "
        "own pool and are not counted).",
    )
    tiles.metric("Queued", counts.get("queued", 0), border=True, width=components.TILE_WIDTH)
    tiles.metric(
        "Running",
        counts.get("running", 0) + counts.get("cancelling", 0),
        border=True,
        width=components.TILE_WIDTH,
    )
    tiles.metric(
        "Success rate",
        f"{rate:.0%}" if rate is not None else "-",
        border=True,
        width=components.TILE_WIDTH,
        help="Succeeded / ended (failed, timed out, needs attention); "
        "cancelled tasks are not counted.",
    )
    tiles.metric(
        "Cost today",
        components.fmt_cost(cost_today),
        border=True,
        width=components.TILE_WIDTH,
        help=f"{tokens_today:,} tokens today (UTC).",
    )


def _charts(frame: pd.DataFrame) -> None:
    layout = components.plotly_layout()
    no_bar = {"displayModeBar": False}
    left, right = st.columns(2)
    with left:
        st.subheader("Outcomes over time", divider="gray")
        bucket = aggregates.time_bucket(frame)
        outcomes = aggregates.outcomes_over_time(frame, bucket)
        if outcomes.empty:
            st.caption("No task has ended yet.")
        else:
            fig = px.bar(
                outcomes,
                x="period",
                y="tasks",
                color="status",
                color_discrete_map=components.STATUS_COLORS,
            )
            fig.update_layout(**layout)
            components.time_bars(fig, bucket, outcomes["period"].max(), 24 if bucket == "h" else 14)
            st.plotly_chart(fig, key="outcomes", config=no_bar)
    with right:
        st.subheader("Queue depth by priority", divider="gray")
        queue = aggregates.queue_depth(frame, all_priorities=True)
        queue["priority"] = "P" + queue["priority"].astype(str)
        fig = px.bar(queue, x="priority", y="queued", color_discrete_sequence=["#2f7de1"])
        fig.update_layout(**layout)
        fig.update_yaxes(rangemode="tozero", dtick=1 if queue["queued"].max() < 6 else None)
        st.plotly_chart(fig, key="queue", config=no_bar)
        st.caption("Waiting tasks per priority (P10 most urgent).")
    per_day = aggregates.cost_per_day(frame)
    left, right = st.columns(2)
    for column, value, title, key in (
        (left, "cost_usd", "Cost per day (USD) by kind", "cost_day"),
        (right, "tokens", "Tokens per day by kind", "tokens_day"),
    ):
        with column:
            st.subheader(title, divider="gray")
            if per_day.empty or float(per_day[value].sum()) == 0:
                st.caption("No cost recorded yet.")
                continue
            fig = px.bar(
                per_day, x="day", y=value, color="kind", color_discrete_map=components.KIND_COLORS
            )
            fig.update_layout(**layout)
            components.time_bars(fig, "D", per_day["day"].max(), 14)
            st.plotly_chart(fig, key=key, config=no_bar)


def _top(title: str, top: pd.DataFrame, key: str) -> None:
    st.subheader(title, divider="gray")
    if top.empty:
        st.caption("Nothing yet.")
        return
    event = st.dataframe(
        top,
        hide_index=True,
        key=key,
        on_select="rerun",
        selection_mode="single-row",
        column_order=["title", "status", "duration_seconds", "cost_usd"],
        column_config={
            "task_id": st.column_config.TextColumn("task"),
            "title": st.column_config.TextColumn("task", width="medium"),
            "duration_seconds": st.column_config.NumberColumn("duration (s)", format="%.1f"),
            "cost_usd": st.column_config.NumberColumn("cost", format="$%.4f"),
        },
    )
    if event is not None and event.selection.rows:
        components.open_task(str(top.iloc[event.selection.rows[0]]["task_id"]))


def _tables(frame: pd.DataFrame, agents: pools.AgentsView | None) -> None:
    left, right = st.columns(2)
    with left:
        st.subheader("Agents per pool", divider="gray")
        if agents is None or agents.pools.empty:
            st.caption("No work pool yet: start the stack with `conductor up`.")
        else:
            st.dataframe(
                agents.pools,
                hide_index=True,
                key="pools",
                column_order=["pool", "status", "busy", "slots", "workers_online"],
                column_config={
                    "workers_online": st.column_config.NumberColumn("workers online"),
                    "busy": st.column_config.ProgressColumn(
                        "busy slots",
                        min_value=0,
                        max_value=max(1, int(agents.pools["slots"].max())),
                        format="%d",
                        color="blue",
                    ),
                },
            )
    with right:
        st.subheader("Cost by kind", divider="gray")
        st.dataframe(
            aggregates.cost_by_kind(frame),
            hide_index=True,
            key="by_kind",
            column_config={
                "cost_usd": st.column_config.NumberColumn("cost", format="$%.4f"),
                "avg_cost_usd": st.column_config.NumberColumn("avg / task", format="$%.4f"),
                "tokens": st.column_config.NumberColumn("tokens", format="localized"),
            },
        )
    left, right = st.columns(2)
    with left:
        _top("Slowest recent tasks", aggregates.slowest(frame), "slowest")
    with right:
        _top("Most expensive recent tasks", aggregates.most_expensive(frame), "expensive")
    st.caption("Select a row to open the task.")


@st.fragment(run_every=components.REFRESH_SECONDS)
def _live() -> None:
    frame = components.fetch(data.fetch_tasks, settings)
    if frame is None:
        return
    agents = components.fetch(pools.fetch_agents, settings)
    components.now_caption()
    if frame.empty:
        st.info(
            "No tasks yet. Submit one on the **Submit** page or with `conductor run`.",
            icon=":material/inbox:",
        )
    _metrics(frame, agents)
    _charts(frame)
    _tables(frame, agents)


_live()
