"""What one finished task contributes to the fleet's counters: its kind, final status, why
its agent stopped, its cost, tokens and timings. Pure: built from a Prefect flow run and the
task's published result (either may lack details), tested without a server.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from prefect.client.schemas.objects import FlowRun, StateType
from pydantic import BaseModel, ConfigDict, Field

from claude_conductor.flows.identity import task_id_of
from claude_conductor.models import TASK_KINDS, TaskResult, TaskStatus

__all__ = [
    "EXIT_REASONS",
    "TaskRecord",
    "exit_reason",
    "final_status",
    "record_of",
    "run_kind",
    "run_queue",
]

#: Fixed reasons; API errors add ``api_error_<status>`` (``api_error_429``, ...).
EXIT_REASONS = (
    "success",
    "denied",
    "timeout",
    "stalled",
    "cancelled",
    "turns",
    "budget",
    "crash",
    "verify_failed",
    "error",
)

_STATE_STATUS: dict[StateType, TaskStatus] = {
    StateType.COMPLETED: TaskStatus.SUCCEEDED,
    StateType.FAILED: TaskStatus.FAILED,
    StateType.CRASHED: TaskStatus.FAILED,
    StateType.CANCELLED: TaskStatus.CANCELLED,
}
_HTTP_STATUS = re.compile(r"\(HTTP (\d{3})\)")


class TaskRecord(BaseModel):
    """One finished conductor task, as the counters see it."""

    model_config = ConfigDict(frozen=True)

    flow_run_id: str = Field(description="The task's flow run id.")
    task_id: str = Field(description="The task id (the flow run's name).")
    kind: str = Field(description="Task kind (from the run's `kind:` tag).")
    status: TaskStatus = Field(description="Final task status.")
    reason: str = Field(description="Why the agent stopped (EXIT_REASONS or api_error_<n>).")
    is_agent: bool = Field(description="An agent ran (not a command task, not a fan-out parent).")
    is_fanout: bool = Field(description="A fan-out parent (its cost is its subtasks').")
    model: str = Field(default="unknown", description="Model the agent used.")
    cost_usd: float = Field(default=0.0, description="What it cost, per the CLI.")
    input_tokens: int = Field(default=0, description="Input tokens (incl. cache).")
    output_tokens: int = Field(default=0, description="Output tokens.")
    start_latency_seconds: float | None = Field(
        default=None, description="Submitted -> Running; None when it never started."
    )
    duration_seconds: float | None = Field(
        default=None, description="Running -> final; None when it never started."
    )
    ended_at: datetime | None = Field(default=None, description="When the run ended.")


def _tag(tags: list[str], prefix: str) -> str | None:
    return next((t[len(prefix) :] for t in tags if t.startswith(prefix)), None)


def run_kind(run: FlowRun) -> str:
    """The task kind a conductor run was submitted with (``generic`` when unknown)."""
    kind = _tag(list(run.tags or []), "kind:")
    return kind if kind in TASK_KINDS else "generic"


def run_queue(run: FlowRun) -> str:
    return run.work_queue_name or "default"


def final_status(run: FlowRun, result: TaskResult | None) -> TaskStatus | None:
    """The task's final status: the published result's, else the final Prefect state's
    (``TimedOut`` / ``NeedsAttention`` names included); None while the run is not final."""
    state = run.state
    if state is None or not state.is_final():
        return None
    if result is not None:
        return result.status
    if state.type is StateType.COMPLETED and state.name == "NeedsAttention":
        return TaskStatus.NEEDS_ATTENTION
    if state.type is StateType.FAILED and state.name == "TimedOut":
        return TaskStatus.TIMED_OUT
    return _STATE_STATUS.get(state.type, TaskStatus.FAILED)


def exit_reason(status: TaskStatus, error: str | None, *, crashed: bool = False) -> str:
    """Why an agent stopped, from the task status and the error text that
    ``agents.status.decide_status`` (or ``flows.steps.collect``) wrote."""
    text = error or ""
    if status is TaskStatus.SUCCEEDED:
        return "success"
    if status is TaskStatus.NEEDS_ATTENTION:
        return "denied"
    if status is TaskStatus.CANCELLED:
        return "cancelled"
    if status is TaskStatus.TIMED_OUT:
        return "stalled" if "inactivity watchdog" in text else "timeout"
    if crashed:
        return "crash"
    if match := _HTTP_STATUS.search(text):
        return f"api_error_{match.group(1)}"
    if "turn limit" in text:
        return "turns"
    if "budget limit" in text:
        return "budget"
    if "without reporting a result" in text or "before it reported a result" in text:
        return "crash"
    if text.startswith("verify command"):
        return "verify_failed"
    return "error"


def _seconds(later: datetime | None, earlier: datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    return max(0.0, (later - earlier).total_seconds())


def record_of(run: FlowRun, result: TaskResult | None) -> TaskRecord | None:
    """The record of a finished run (None while it is not final)."""
    status = final_status(run, result)
    if status is None:
        return None
    spec: Any = (run.parameters or {}).get("spec")
    subtasks = bool(spec.get("subtasks")) if isinstance(spec, dict) else False
    is_fanout = subtasks or bool(result is not None and result.subtasks)
    kind = result.kind if result is not None else run_kind(run)
    crashed = run.state is not None and run.state.type is StateType.CRASHED
    error = result.error if result is not None else (run.state.message if run.state else None)
    end = run.end_time
    return TaskRecord(
        flow_run_id=str(run.id),
        task_id=task_id_of(run),
        kind=kind,
        status=status,
        reason=exit_reason(status, error, crashed=crashed and result is None),
        is_agent=kind != "command" and not is_fanout,
        is_fanout=is_fanout,
        model=(result.model if result is not None else None) or "unknown",
        cost_usd=result.cost_usd if result is not None else 0.0,
        input_tokens=result.input_tokens if result is not None else 0,
        output_tokens=result.output_tokens if result is not None else 0,
        start_latency_seconds=_seconds(run.start_time, run.created),
        duration_seconds=_seconds(end, run.start_time),
        ended_at=end,
    )
