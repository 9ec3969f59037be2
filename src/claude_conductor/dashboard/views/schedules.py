"""Schedules: tasks that run by themselves (Prefect deployment schedules); pause, resume or
remove one. Add them with `conductor schedule add`."""

from __future__ import annotations

import streamlit as st

from claude_conductor.dashboard import components
from claude_conductor.dashboard import schedules as data
from claude_conductor.errors import ConductorError

settings = components.settings()

st.title("Schedules")
st.caption(
    "Tasks that run by themselves on a cron or an interval, on Prefect's own deployment "
    'schedules. Add one with `conductor schedule add task.yaml --cron "0 2 * * *"`.'
)


def _act(action: str, name: str) -> None:
    try:
        if action == "remove":
            message = data.remove(settings, name)
        else:
            message = data.set_active(settings, name, action == "resume")
    except ConductorError as exc:
        st.session_state["schedule_message"] = ("error", str(exc))
    else:
        st.session_state["schedule_message"] = ("success", message)


infos = components.fetch(data.fetch_schedules, settings)
if infos is not None:
    components.now_caption(refresh_seconds=None)
    notice = st.session_state.pop("schedule_message", None)
    if notice is not None:
        kind, text = notice
        (st.error if kind == "error" else st.success)(text)
    if not infos:
        st.info(
            'No schedules yet: `conductor schedule add task.yaml --cron "0 2 * * *"`.',
            icon=":material/info:",
        )
    else:
        tiles = components.tile_row()
        active = sum(1 for i in infos if i.active)
        tiles.metric("Schedules", len(infos), border=True, width=components.TILE_WIDTH)
        tiles.metric("Active", active, border=True, width=components.TILE_WIDTH)
        tiles.metric("Paused", len(infos) - active, border=True, width=components.TILE_WIDTH)
        st.dataframe(
            data.schedules_frame(infos),
            hide_index=True,
            key="schedules_table",
            column_config={
                "next_run": st.column_config.DatetimeColumn(
                    "next run (UTC)", format="YYYY-MM-DD HH:mm:ss"
                ),
                "last_run": st.column_config.TextColumn("last run"),
            },
        )
        st.subheader("Manage", divider="gray")
        names = [i.name for i in infos]
        chosen = st.selectbox("Schedule", names, key="schedule_pick")
        current = next(i for i in infos if i.name == chosen)
        row = st.container(horizontal=True, gap="small")
        if current.active:
            row.button(
                "Pause",
                icon=":material/pause:",
                key="schedule_pause",
                on_click=_act,
                args=("pause", chosen),
            )
        else:
            row.button(
                "Resume",
                icon=":material/play_arrow:",
                key="schedule_resume",
                on_click=_act,
                args=("resume", chosen),
                type="primary",
            )
        sure = row.checkbox("Really remove it", key="schedule_remove_sure")
        row.button(
            "Remove",
            icon=":material/delete:",
            key="schedule_remove",
            on_click=_act,
            args=("remove", chosen),
            disabled=not sure,
        )
        if current.builtin:
            st.caption(
                "A Conductor example: `conductor up` registers it again. To run it on your "
                "repository, see Schedules in the README."
            )
