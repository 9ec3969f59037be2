"""When a run's logs are complete: Prefect's engine logs (and sends) its last line just after it
reports the final state, so 'final' alone does not mean every line is in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

from prefect.client.schemas.objects import FlowRun, Log
from prefect.states import Completed, Crashed, Running

from claude_conductor.client.tasks import LOGS_SETTLE_SECONDS, logs_complete


def _log(name: str, message: str) -> Log:
    return Log(
        name=name, level=20, message=message, timestamp=datetime.now(UTC), flow_run_id=uuid4()
    )


def _run(state: object) -> FlowRun:
    return FlowRun(id=uuid4(), name="r", flow_id=uuid4(), state=state)


def test_a_final_run_is_complete_once_its_engines_last_line_is_in() -> None:
    lines = [_log("prefect.flow_runs", "task t-1 (command) on /repo")]
    done = _run(Completed())
    assert not logs_complete(done, lines)  # final, but the engine's last line is not in yet
    task_line = _log("prefect.task_runs", "Finished in state Completed()")
    assert not logs_complete(done, [*lines, task_line])  # a task run's, not the flow run's
    last = _log("prefect.flow_runs", "Finished in state Completed('succeeded')")
    assert logs_complete(done, [*lines, task_line, last])
    assert not logs_complete(_run(Running()), [*lines, last])  # not final: more may come


def test_a_run_whose_engine_never_logged_its_end_is_complete_after_a_while() -> None:
    crashed = Crashed(message="the process was killed")
    crashed.timestamp = datetime.now(UTC) - timedelta(seconds=LOGS_SETTLE_SECONDS + 1)
    assert logs_complete(_run(crashed), [])
    assert not logs_complete(_run(Crashed()), [])  # just now: its last lines may be on the way
