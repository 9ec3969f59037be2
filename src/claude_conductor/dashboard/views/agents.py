"""Agents: work pools and workers, each agent slot and what it is doing, scale up/down."""

from __future__ import annotations

import streamlit as st

from claude_conductor.dashboard import components, pools
from claude_conductor.errors import ConductorError

settings = components.settings()

st.title("Agents")


def _slot_card(slot: dict[str, object]) -> None:
    with st.container(border=True):
        st.markdown(f"**Slot {slot['slot']}**")
        if not slot["task_id"]:
            st.caption(":material/bedtime: idle")
            return
        task_id = str(slot["task_id"])
        st.markdown(f":blue-badge[{slot['state']}] `{slot['kind']}`")
        st.page_link(
            components.TASKS_PAGE,
            label=task_id,
            icon=":material/open_in_new:",
            query_params={"task": task_id},
        )
        st.caption(
            f"{str(slot['title'])[:60]} · {components.fmt_duration(slot['seconds'])}"  # type: ignore[arg-type]
            + (f" · {slot['worker']}" if slot["worker"] else "")
        )


@st.fragment(run_every=components.REFRESH_SECONDS)
def _live() -> None:
    view = components.fetch(pools.fetch_agents, settings)
    if view is None:
        return
    components.now_caption()
    tiles = components.tile_row()
    tiles.metric("Workers online", view.workers_online, border=True, width=components.TILE_WIDTH)
    tiles.metric(
        "Busy slots",
        f"{view.busy_slots} / {view.total_slots}",
        border=True,
        width=components.TILE_WIDTH,
    )
    tiles.metric("Work pools", len(view.pools), border=True, width=components.TILE_WIDTH)
    tiles.metric(
        "Configured agents",
        view.configured_agents,
        border=True,
        width=components.TILE_WIDTH,
        help=f"worker.agents for pool {view.default_pool!r}",
    )
    for note in view.notes:
        st.caption(note)
    if view.pools.empty:
        st.info("No work pool yet: start the stack with `conductor up`.", icon=":material/info:")
        return
    for pool in view.pools.to_dict("records"):
        st.subheader(f"{pool['pool']}", divider="gray")
        st.caption(
            f"type {pool['type']} · {pool['status']} · {pool['busy']} of {pool['slots']} slots "
            f"busy · {pool['workers_online']} worker(s) online"
        )
        slots = view.slots[view.slots["pool"] == pool["pool"]].to_dict("records")
        per_row = 4
        for start in range(0, len(slots), per_row):
            row = st.columns(per_row)
            for col, slot in zip(row, slots[start : start + per_row], strict=False):
                with col:
                    _slot_card(slot)
        workers = view.workers[view.workers["pool"] == pool["pool"]]
        if workers.empty:
            st.caption("No worker has polled this pool.")
        else:
            st.dataframe(
                workers,
                hide_index=True,
                key=f"workers_{pool['pool']}",
                column_config={
                    "last_heartbeat": st.column_config.DatetimeColumn(
                        "last heartbeat (UTC)", format="HH:mm:ss"
                    )
                },
            )


def _scale() -> None:
    st.subheader("Scale", divider="gray")
    left, _ = st.columns([1, 2])
    with left, st.form("scale"):
        wanted = st.number_input(
            "Agent slots (tasks at once)",
            value=settings.worker.agents,
            step=1,
            help=pools.scaling_advice(settings),
            key="scale_agents",
        )
        if st.form_submit_button("Apply", icon=":material/tune:"):
            try:
                message = pools.scale(settings, int(wanted))
            except ConductorError as exc:
                st.error(str(exc), icon=":material/error:")
            else:
                st.success(message, icon=":material/check:")


_live()
_scale()
