"""What one finished task adds to the counters: status and exit reason from the real messages
``agents.status.decide_status`` writes, kinds from tags, each run counted once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from metrics_support import record
from prefect.client.schemas.objects import FlowRun, State, StateType

from claude_conductor.agents.status import decide_status
from claude_conductor.metrics.records import exit_reason, record_of
from claude_conductor.metrics.snapshot import Tally
from claude_conductor.models import ResultEvent, TaskResult, TaskStatus

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("result", "flags", "reason"),
    [
        (ResultEvent(subtype="success"), {}, "success"),
        (ResultEvent(permission_denials=[{"tool_name": "Write"}]), {}, "denied"),
        (ResultEvent(is_error=True, api_error_status=500, result="boom"), {}, "api_error_500"),
        (
            ResultEvent(is_error=True, api_error_status=429, result="(HTTP 500) x"),
            {},
            "api_error_429",
        ),
        (ResultEvent(is_error=True, api_error_status=418), {}, "api_error_418"),
        (ResultEvent(subtype="error_max_turns", is_error=True, num_turns=3), {}, "turns"),
        (ResultEvent(subtype="error_max_budget_usd", is_error=True), {}, "budget"),
        (ResultEvent(subtype="error_during_execution", is_error=True), {}, "error"),
        (None, {"exit_code": -9}, "crash"),
        (None, {"exit_code": 3}, "crash"),
        (None, {"timed_out": True, "timeout_seconds": 5}, "timeout"),
        (None, {"stalled": True, "inactivity_timeout_seconds": 30}, "stalled"),
        (None, {"cancelled": True}, "cancelled"),
    ],
)
def test_exit_reason_reads_the_runtime_messages(
    result: ResultEvent | None, flags: dict[str, Any], reason: str
) -> None:
    flags.setdefault("exit_code", 0)
    status, error = decide_status(result, max_turns=3, max_budget_usd=1.0, **flags)
    assert exit_reason(status, error) == reason


def test_verify_failure_and_unknown_errors() -> None:
    assert exit_reason(TaskStatus.FAILED, "verify command 'pytest' exited with code 1") == (
        "verify_failed"
    )
    assert exit_reason(TaskStatus.FAILED, None) == "error"
    assert exit_reason(TaskStatus.FAILED, "whatever", crashed=True) == "crash"


def _run(
    state: State[Any] | None, *, tags: list[str], spec: dict[str, Any] | None = None
) -> FlowRun:
    return FlowRun(
        id=uuid4(),
        name="t-1",
        flow_id=uuid4(),
        tags=tags,
        state=state,
        parameters={"spec": spec or {"kind": "refactor", "prompt": "x"}},
        created=T0,
        start_time=T0 + timedelta(seconds=2) if state else None,
        end_time=T0 + timedelta(seconds=32) if state and state.is_final() else None,
    )


def test_record_from_state_names_when_no_result_was_published() -> None:
    tags = ["conductor", "kind:refactor"]
    timed = record_of(_run(State(type=StateType.FAILED, name="TimedOut"), tags=tags), None)
    assert timed is not None and timed.status is TaskStatus.TIMED_OUT and timed.reason == "timeout"
    assert timed.kind == "refactor" and timed.start_latency_seconds == 2.0
    assert timed.duration_seconds == 30.0
    crashed = record_of(_run(State(type=StateType.CRASHED, name="Crashed"), tags=tags), None)
    assert crashed is not None and crashed.reason == "crash" and crashed.status is TaskStatus.FAILED
    attention = record_of(
        _run(State(type=StateType.COMPLETED, name="NeedsAttention"), tags=tags), None
    )
    assert attention is not None and attention.status is TaskStatus.NEEDS_ATTENTION
    assert record_of(_run(State(type=StateType.RUNNING, name="Running"), tags=tags), None) is None
    assert record_of(_run(None, tags=tags), None) is None


def test_record_prefers_the_published_result() -> None:
    run = _run(State(type=StateType.FAILED, name="Failed"), tags=["conductor", "kind:generic"])
    result = TaskResult(
        task_id="t-1", kind="generic", status=TaskStatus.FAILED, model="claude-x",
        cost_usd=0.5, input_tokens=7, output_tokens=3,
        error="the model API is overloaded (HTTP 529); retry later",
    )  # fmt: skip
    rec = record_of(run, result)
    assert rec is not None
    assert (rec.reason, rec.model, rec.cost_usd, rec.input_tokens) == (
        "api_error_529",
        "claude-x",
        0.5,
        7,
    )
    assert rec.is_agent and not rec.is_fanout


def test_fanout_parents_and_commands_are_not_agent_exits_and_parents_cost_nothing() -> None:
    run = _run(
        State(type=StateType.COMPLETED, name="Completed"),
        tags=["conductor", "kind:generic"],
        spec={"kind": "generic", "prompt": "x", "subtasks": [{"prompt": "y"}]},
    )
    parent = record_of(run, TaskResult(task_id="t-1", status=TaskStatus.SUCCEEDED, cost_usd=9.0))
    assert parent is not None and parent.is_fanout and not parent.is_agent
    tally = Tally()
    assert tally.add(parent)
    assert tally.add(record(2, kind="command", is_agent=False))
    assert not tally.add(record(2, kind="command", is_agent=False)), "a run counts once"
    parts = tally.parts()
    assert parts["exits"] == []
    assert sum(c.usd for c in parts["cost"]) == 0.25  # the command's, not the parent's 9.0
    assert {(t.kind, t.count) for t in parts["tasks"]} == {("generic", 1), ("command", 1)}


def test_histograms_bucket_observations() -> None:
    tally = Tally()
    for n, seconds in enumerate([0.1, 3.0, 3.0, 5000.0]):
        tally.add(record(n, start_latency_seconds=seconds, duration_seconds=seconds))
    latency = tally.start_latency.data()
    cumulative = dict(latency.cumulative())
    assert cumulative["0.25"] == 1 and cumulative["5.0"] == 3 and cumulative["+Inf"] == 4
    assert cumulative["3600.0"] == 3
    assert latency.count == 4 and latency.sum == pytest.approx(5006.1)
