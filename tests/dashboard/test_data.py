"""The dashboard's data layer against a real Prefect server with real conductor runs."""

from __future__ import annotations

import socket
from typing import Any

import pandas as pd
import pytest

from claude_conductor.dashboard import aggregates, data, pools
from claude_conductor.dashboard.cache import clear_cache
from claude_conductor.errors import ConductorError, InputError, NotFoundError
from claude_conductor.models import TaskSpec
from claude_conductor.settings import ConductorSettings

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _fresh() -> None:
    clear_cache()


def _row(frame: pd.DataFrame, task_id: str) -> pd.Series:
    rows = frame[frame["task_id"] == task_id]
    assert len(rows) == 1, f"{task_id} not in {frame['task_id'].tolist()}"
    return rows.iloc[0]


def test_tasks_frame_has_every_run_with_its_status_and_cost(
    settings: ConductorSettings, seeded: Any
) -> None:
    frame = data.fetch_tasks(settings)
    assert list(frame.columns) == data.TASK_COLUMNS
    ok = _row(frame, seeded.ok_id)
    assert (ok["status"], ok["kind"], ok["priority"]) == ("succeeded", "refactor", 6)
    assert ok["cost_usd"] == pytest.approx(0.1234)
    assert (ok["tokens"], ok["turns"], ok["files_changed"]) == (12800, 4, 2)
    assert ok["duration_seconds"] == pytest.approx(42.5)
    assert ok["branch"] == f"conductor/{seeded.ok_id}"
    assert ok["is_final"] and pd.notna(ok["started"]) and pd.notna(ok["finished"])
    failed = _row(frame, seeded.failed_id)
    assert failed["status"] == "failed"
    assert "exited with code 1" in failed["error"]
    running = _row(frame, seeded.running_id)
    assert (running["status"], running["state"], running["worker"]) == (
        "running",
        "Running",
        seeded.worker,
    )
    assert running["work_pool"] == seeded.pool and not running["is_final"]
    queued = _row(frame, seeded.queued_id)
    assert (queued["status"], queued["priority"], queued["kind"]) == ("queued", 8, "analysis")


def test_aggregates_of_the_real_runs(settings: ConductorSettings, seeded: Any) -> None:
    frame = data.fetch_tasks(settings)
    mine = frame[frame["task_id"].isin([seeded.ok_id, seeded.failed_id, seeded.queued_id])]
    assert aggregates.success_rate(mine) == pytest.approx(0.5)
    per_day = aggregates.cost_per_day(mine)
    today = pd.Timestamp.now(tz="UTC").floor("D")
    by_kind = per_day[per_day["day"] == today].set_index("kind")
    assert by_kind.loc["refactor", "cost_usd"] == pytest.approx(0.1234)
    assert by_kind.loc["code_review", "cost_usd"] == pytest.approx(0.05)
    assert by_kind.loc["refactor", "tokens"] == 12800
    depth = aggregates.queue_depth(mine)
    assert depth.to_dict("records") == [{"priority": 8, "queued": 1}]
    assert aggregates.slowest(mine)["task_id"].tolist() == [seeded.failed_id, seeded.ok_id]
    assert aggregates.most_expensive(mine)["task_id"].tolist()[0] == seeded.ok_id


def test_detail_of_a_succeeded_task(settings: ConductorSettings, seeded: Any) -> None:
    detail = data.fetch_detail(settings, seeded.ok_id)
    assert detail.row["status"] == "succeeded" and detail.is_final
    assert detail.result is not None and detail.result.cost_usd == pytest.approx(0.1234)
    assert detail.spec is not None and detail.spec.verify == "pytest -q"
    assert [f.path for f in detail.files] == ["src/app.py", "tests/test_app.py"]
    assert [(f.insertions, f.deletions, f.status) for f in detail.files] == [
        (2, 2, "modified"),
        (4, 0, "added"),
    ]
    assert "+def bar(x):" in detail.diff
    # The transcript file: text, tool calls paired with their results, the final result.
    assert detail.transcript_source == "file"
    kinds = [e.kind for e in detail.transcript]
    assert kinds == ["system", "text", "tool", "tool", "result"]
    edit = detail.transcript[2]
    assert edit.title == "Edit src/app.py"
    assert edit.output == "The file src/app.py has been updated."
    assert detail.transcript[3].output == "1 passed in 0.01s"
    assert "$0.1234" in detail.transcript[4].title
    states = detail.timeline["state"].tolist()
    assert states[0] == "Pending" and states[-1] == "Completed" and "Running" in states
    assert "agent says: I'll rename foo to bar." in detail.logs["message"].tolist()
    assert detail.report_markdown.startswith("# ✅")
    assert detail.prefect_url.endswith(f"/runs/flow-run/{detail.flow_run_id}")
    assert "/api/" not in detail.prefect_url


def test_detail_falls_back_to_report_diff_and_log_transcript(
    settings: ConductorSettings, seeded: Any
) -> None:
    detail = data.fetch_detail(settings, seeded.failed_id)
    assert detail.row["status"] == "failed"
    # The .patch file is gone and the transcript file never existed: both come from Prefect.
    assert [f.path for f in detail.files] == ["src/app.py"]
    assert "+def bar(x):" in detail.diff
    assert detail.transcript_source == "logs"
    assert [e.kind for e in detail.transcript] == ["system", "text", "tool", "result"]
    assert detail.transcript[2].title == "Read src/app.py"
    assert detail.transcript[2].output == "def foo(x): ..."


def test_detail_of_an_unknown_task_says_so(settings: ConductorSettings, seeded: Any) -> None:
    with pytest.raises(NotFoundError, match="no task 'no-such-task'"):
        data.fetch_detail(settings, "no-such-task")


def test_agents_view_shows_pool_slots_and_worker(settings: ConductorSettings, seeded: Any) -> None:
    view = pools.fetch_agents(settings)
    pool = view.pools.set_index("pool").loc[seeded.pool]
    assert pool["slots"] >= 2 and pool["busy"] >= 1 and pool["workers_online"] == 1
    workers = view.workers[view.workers["pool"] == seeded.pool]
    assert workers["worker"].tolist() == [seeded.worker]
    assert workers["status"].tolist() == ["online"]
    slots = view.slots[view.slots["pool"] == seeded.pool]
    assert seeded.running_id in slots["task_id"].tolist()
    assert view.workers_online >= 1 and view.busy_slots >= 1


def test_submit_cancel_and_retry(settings: ConductorSettings, seeded: Any) -> None:
    spec = TaskSpec(kind="analysis", repo="/srv/demo", prompt="Count the modules", priority=9)
    submitted = data.submit(settings, spec)
    assert submitted.task_id == spec.id
    row = _row(data.fetch_tasks(settings), spec.id)
    assert (row["status"], row["priority"], row["kind"]) == ("queued", 9, "analysis")

    running = seeded.make_running("cancel-me")
    state = data.cancel(settings, running)
    assert state in {"Cancelling", "Cancelled"}
    assert _row(data.fetch_tasks(settings), running)["status"] in {"cancelling", "cancelled"}
    with pytest.raises(InputError, match="already ended"):
        data.cancel(settings, seeded.ok_id)

    again = data.retry(settings, seeded.ok_id)
    assert again.task_id != seeded.ok_id
    detail = data.fetch_detail(settings, again.task_id)
    assert detail.spec is not None and detail.spec.prompt == "Rename foo to bar"
    assert f"retry-of:{seeded.ok_id}" in detail.spec.tags
    with pytest.raises(InputError, match="still"):
        data.retry(settings, seeded.running_id)


def test_reads_are_cached_briefly_and_actions_clear_the_cache(
    settings: ConductorSettings, seeded: Any
) -> None:
    first = data.fetch_tasks(settings)
    spec = TaskSpec(kind="generic", repo="/srv/demo", prompt="Say hello")
    from claude_conductor.client import tasks as api
    from claude_conductor.dashboard.cache import run_sync

    async def submit_behind_the_cache() -> None:
        async with api.api_client(settings) as client:
            await api.submit_task(client, spec)

    run_sync(submit_behind_the_cache)
    assert spec.id not in data.fetch_tasks(settings)["task_id"].tolist()  # cached
    clear_cache()
    assert spec.id in data.fetch_tasks(settings)["task_id"].tolist()
    assert len(first) >= 4


def test_a_server_that_is_down_gives_one_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = ConductorSettings(server={"api_url": f"http://127.0.0.1:{port}/api"})
    with pytest.raises(ConductorError, match="server is not running"):
        data.fetch_tasks(down)


def test_scale_outside_standalone_says_how(settings: ConductorSettings) -> None:
    # The advice is the tier's own (get_tier(...).scaling_advice), and names the compose
    # service that really starts agent containers (there is no `agent` service to --scale).
    docker = settings.model_copy(update={"tier": "docker"})
    advice = pools.scaling_advice(docker)
    assert "conductor agents scale N --tier docker" in advice
    assert "`worker`" in advice and "--scale agent" not in advice


def test_status_and_dashboard_count_busy_slots_alike(
    settings: ConductorSettings, seeded: Any
) -> None:
    """A Cancelling run still holds its slot (Prefect counts it): both sides say so."""
    import asyncio

    from prefect.states import Cancelling

    from claude_conductor.client import tasks as api
    from claude_conductor.client.rest import api_reader
    from claude_conductor.tiers.status import read_pool_status

    pool = "busy-definition"

    async def seed_and_count() -> int:
        async with api.api_client(settings) as client:
            from prefect.client.schemas.actions import WorkPoolCreate

            await client.create_work_pool(
                WorkPoolCreate(name=pool, type="process", concurrency_limit=3), overwrite=True
            )
            flow_id = await client.create_flow_from_name("conductor-task")
            deployment = await client.create_deployment(flow_id, "busy", work_pool_name=pool)
            await client.create_flow_run_from_deployment(
                deployment, state=Cancelling(), tags=["conductor"]
            )
        async with api_reader(settings) as reader:
            status = await read_pool_status(reader, pool)
            assert status is not None
            return status.busy

    status_busy = asyncio.run(seed_and_count())
    view = pools.fetch_agents(settings)
    assert status_busy == 1
    assert view.pools.set_index("pool").loc[pool, "busy"] == status_busy


def test_scale_sets_the_pool_slots_through_the_standalone_tier(
    settings: ConductorSettings, seeded: Any
) -> None:
    with pytest.raises(InputError, match="whole number from 1"):
        pools.scale(settings, 0)
    try:
        message = pools.scale(settings, 3)
        assert "agent slots set to 3" in message and "now" in message
        view = pools.fetch_agents(settings)
        assert view.pools.set_index("pool").loc[seeded.pool, "slots"] == 3
        assert len(view.slots[view.slots["pool"] == seeded.pool]) == 3
    finally:
        pools.scale(settings, 2)


def test_prefect_links_follow_the_ui_url_setting() -> None:
    from claude_conductor.dashboard.data import prefect_run_url
    from claude_conductor.settings import ConductorSettings, ServerSettings

    behind_proxy = ConductorSettings(
        server=ServerSettings(api_url="http://prefect-server:4200/api", ui_url="/")
    )
    assert prefect_run_url(behind_proxy, "abc") == "/runs/flow-run/abc"
    local = ConductorSettings(server=ServerSettings(port=4321, api_url=None, ui_url=None))
    assert prefect_run_url(local, "abc") == "http://127.0.0.1:4321/runs/flow-run/abc"
