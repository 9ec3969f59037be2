"""Chart numbers from a tasks frame: pure pandas, no server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from claude_conductor.dashboard import aggregates
from claude_conductor.dashboard.data import TASK_COLUMNS

DAY1 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=3)


def _row(task_id: str, status: str, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {c: None for c in TASK_COLUMNS}
    row.update(
        task_id=task_id,
        title=task_id,
        status=status,
        kind="generic",
        priority=5,
        created=DAY1,
        started=DAY1,
        finished=DAY1 if status not in {"queued", "running"} else None,
        duration_seconds=10.0,
        cost_usd=0.0,
        input_tokens=0,
        output_tokens=0,
        tokens=0,
        turns=0,
        is_fanout=False,
    )
    row.update(fields)
    return row


def _frame(*rows: dict[str, Any]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=TASK_COLUMNS)
    for column in ("created", "started", "finished"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


@pytest.fixture
def frame() -> pd.DataFrame:
    return _frame(
        _row("a", "succeeded", kind="refactor", cost_usd=1.0, tokens=100, duration_seconds=30),
        _row("b", "failed", kind="refactor", cost_usd=0.5, tokens=50, finished=DAY2),
        _row("c", "cancelled", kind="analysis", cost_usd=0.25, tokens=10),
        _row("d", "queued", priority=9),
        _row("e", "queued", priority=9),
        _row("f", "queued", priority=2),
        _row("g", "running"),
        # A fan-out parent: its cost is the sum of subtasks a and b, so it is never added again.
        _row(
            "p",
            "failed",
            kind="refactor",
            cost_usd=1.5,
            tokens=150,
            is_fanout=True,
            duration_seconds=99,
        ),
    )


def test_success_rate_leaves_cancelled_and_unfinished_out(frame: pd.DataFrame) -> None:
    # a succeeded; b and p failed; c cancelled (not judged); queued/running not ended.
    assert aggregates.success_rate(frame) == pytest.approx(1 / 3)
    assert aggregates.success_rate(_frame(_row("q", "queued"))) is None


def test_queue_depth_by_priority_most_urgent_first(frame: pd.DataFrame) -> None:
    assert aggregates.queue_depth(frame).to_dict("records") == [
        {"priority": 9, "queued": 2},
        {"priority": 2, "queued": 1},
    ]
    full = aggregates.queue_depth(frame, all_priorities=True)
    assert full["priority"].tolist() == list(range(10, 0, -1))
    assert full["queued"].tolist() == [0, 2, 0, 0, 0, 0, 0, 0, 1, 0]


def test_cost_per_day_by_kind_without_fanout_parents(frame: pd.DataFrame) -> None:
    per_day = aggregates.cost_per_day(frame)
    got = {
        (row["day"].date().isoformat(), row["kind"]): row["cost_usd"]
        for row in per_day.to_dict("records")
    }
    assert got == {
        ("2026-03-01", "analysis"): 0.25,
        ("2026-03-01", "refactor"): 1.0,
        ("2026-03-04", "refactor"): 0.5,
    }
    assert per_day["cost_usd"].sum() == pytest.approx(1.75)  # not 3.25: p is left out


def test_cost_by_kind_totals_and_average(frame: pd.DataFrame) -> None:
    by_kind = aggregates.cost_by_kind(frame).set_index("kind")
    assert by_kind.loc["refactor", "cost_usd"] == pytest.approx(1.5)
    assert by_kind.loc["refactor", "tasks"] == 2
    assert by_kind.loc["refactor", "avg_cost_usd"] == pytest.approx(0.75)


def test_outcomes_over_time_buckets_by_day_for_long_spans(frame: pd.DataFrame) -> None:
    assert aggregates.time_bucket(frame) == "D"
    outcomes = aggregates.outcomes_over_time(frame)
    got = {
        (r["period"].date().isoformat(), r["status"]): r["tasks"]
        for r in outcomes.to_dict("records")
    }
    assert got == {
        ("2026-03-01", "cancelled"): 1,
        ("2026-03-01", "failed"): 1,
        ("2026-03-01", "succeeded"): 1,
        ("2026-03-04", "failed"): 1,
    }


def test_short_spans_bucket_by_hour() -> None:
    frame = _frame(_row("a", "succeeded"), _row("b", "failed", finished=DAY1 + timedelta(hours=2)))
    assert aggregates.time_bucket(frame) == "h"
    assert len(aggregates.outcomes_over_time(frame)) == 2


def test_slowest_and_most_expensive(frame: pd.DataFrame) -> None:
    assert aggregates.slowest(frame, 2)["task_id"].tolist() == ["p", "a"]
    assert aggregates.most_expensive(frame)["task_id"].tolist() == ["a", "b", "c"]


def test_an_empty_frame_gives_empty_charts() -> None:
    empty = _frame()
    assert aggregates.cost_per_day(empty).empty
    assert aggregates.outcomes_over_time(empty).empty
    assert aggregates.queue_depth(empty).empty
    assert aggregates.queue_depth(empty, all_priorities=True)["queued"].sum() == 0
    assert aggregates.status_counts(empty) == {}


def test_overview_counts_agent_slots_not_the_fan_out_parents_pool() -> None:
    import pandas as pd

    from claude_conductor.dashboard.pools import AgentsView

    empty = pd.DataFrame()
    view = AgentsView(
        pools=pd.DataFrame(
            [
                {"pool": "conductor-agents", "slots": 2, "busy": 1},
                {"pool": "conductor-coordinators", "slots": 2, "busy": 1},
            ]
        ),
        workers=empty,
        slots=empty,
        default_pool="conductor-agents",
    )
    assert (view.agent_busy, view.agent_slots) == (1, 2)
    assert (view.busy_slots, view.total_slots) == (2, 4)  # the Agents page shows every pool
    elsewhere = AgentsView(pools=view.pools, workers=empty, slots=empty, default_pool="other")
    assert elsewhere.agent_slots == 4  # no agent pool known: every slot counts
