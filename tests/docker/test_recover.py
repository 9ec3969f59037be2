"""What a restarted docker-tier worker decides for the runs its dead engines left (pure)."""

from __future__ import annotations

from uuid import uuid4

from prefect.client.schemas.objects import FlowRun
from prefect.states import Cancelling, Pending, Running

from claude_conductor.tiers.docker.recover import WORKER_DIED, decide


def _run(state: object, retries: object = None, run_count: int = 1) -> FlowRun:
    spec = {"kind": "command", "command": "true"}
    if retries is not None:
        spec["retries"] = retries
    return FlowRun(
        flow_id=uuid4(), name="t-1", parameters={"spec": spec}, state=state, run_count=run_count
    )


def test_a_task_with_retries_left_runs_again_and_says_why() -> None:
    decision = decide(_run(Running(), retries=1, run_count=1), role="worker")
    assert decision.action == "retry"
    assert WORKER_DIED in decision.message and "attempt 2 of 2" in decision.message


def test_without_retries_left_it_ends_crashed_saying_the_worker_died() -> None:
    for run in (_run(Running()), _run(Running(), retries=1, run_count=2), _run(Running(), "x")):
        decision = decide(run, role="worker")
        assert decision.action == "crash" and decision.message.startswith(WORKER_DIED)


def test_pending_runs_start_again_and_cancelling_ones_end_cancelled() -> None:
    assert decide(_run(Pending()), role="worker").action == "retry"
    assert decide(_run(Cancelling()), role="worker").action == "cancel"
    # A fan-out parent is never re-run behind its subtasks' back.
    assert decide(_run(Running(), retries=3), role="coordinator").action == "crash"
