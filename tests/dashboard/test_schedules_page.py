"""The Schedules page through Streamlit's AppTest, on the dashboard tests' real Prefect server:
it lists a schedule, resumes and pauses it, and removes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from claude_conductor.client.connection import conductor_client, run_sync
from claude_conductor.client.schedules import Timing, add_schedule, set_schedule_active
from claude_conductor.dashboard import launch
from claude_conductor.dashboard.cache import clear_cache
from claude_conductor.dashboard.schedules import schedules_frame
from claude_conductor.models import TaskSpec
from claude_conductor.settings import ConductorSettings
from helpers import make_repo

pytestmark = pytest.mark.integration

APP = str(launch.app_path())
NAME = "page-weekly"


def _page() -> AppTest:
    clear_cache()
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("views/schedules.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _rows(at: AppTest) -> dict[str, dict[str, Any]]:
    frame = at.dataframe[0].value
    return {row["name"]: row for row in frame.to_dict("records")}


def test_schedules_page_lists_pauses_resumes_and_removes(
    conductor_env: dict[str, str], settings: ConductorSettings, seeded: Any, tmp_path: Path
) -> None:
    repo = str(make_repo(tmp_path / "app"))  # resuming checks that the repository is there
    spec = TaskSpec.model_validate(
        {"kind": "code_review", "title": "Weekly review", "prompt": "Review", "repo": repo}
    )

    async def create() -> None:
        async with conductor_client(settings) as client:
            await add_schedule(client, settings, spec, Timing(cron="0 3 * * 1"), NAME)
            # Paused at once: its runs must not show up in the other pages' tests.
            await set_schedule_active(client, NAME, False)

    run_sync(create())
    at = _page()
    row = _rows(at)[NAME]
    assert (row["state"], row["when"], row["kind"], row["task"]) == (
        "paused",
        "cron 0 3 * * 1 (UTC)",
        "code_review",
        "Weekly review",
    )
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["Paused"]) >= 1

    at.selectbox(key="schedule_pick").select(NAME).run()
    at.button(key="schedule_resume").click().run()
    assert not at.exception
    assert any(f"Resumed '{NAME}'" in s.value for s in at.success)
    assert _rows(at)[NAME]["state"] == "active"

    at.button(key="schedule_pause").click().run()
    assert any(f"Paused '{NAME}'" in s.value for s in at.success)
    assert _rows(at)[NAME]["state"] == "paused"

    # Remove needs its confirmation box ticked first.
    assert at.button(key="schedule_remove").disabled
    at.checkbox(key="schedule_remove_sure").check().run()
    at.button(key="schedule_remove").click().run()
    assert any(f"Removed '{NAME}'" in s.value for s in at.success)
    assert NAME not in (_rows(at) if at.dataframe else {})


def test_schedules_frame_columns() -> None:
    frame = schedules_frame([])
    assert list(frame.columns) == [
        "name",
        "state",
        "when",
        "next_run",
        "last_run",
        "kind",
        "task",
        "repo",
    ]
