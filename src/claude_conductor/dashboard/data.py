"""Everything the dashboard reads about tasks from the Prefect API (and the actions on them),
as pandas frames and plain dataclasses. No Streamlit here: pages render what these return.

Every function is synchronous (Streamlit scripts run in plain threads): the async Prefect calls
go through ``cache.run_sync``, and reads are cached for a couple of seconds (``cache.cached``).
Workers, pools and slots are in ``pools``; chart numbers in ``aggregates``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import pandas as pd
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, Log, State, StateType
from prefect.client.schemas.sorting import FlowRunSort
from pydantic import ValidationError

from claude_conductor.client import tasks as api
from claude_conductor.dashboard.cache import cached, clear_cache, run_sync
from claude_conductor.dashboard.transcript import (
    FileDiff,
    TranscriptEntry,
    diff_from_report,
    read_patch,
    split_diff,
    transcript_from_jsonl,
    transcript_from_log_messages,
)
from claude_conductor.flows.identity import task_id_of
from claude_conductor.flows.results import read_result, read_results
from claude_conductor.models import TaskResult, TaskSpec
from claude_conductor.settings import ConductorSettings

__all__ = [
    "TASK_COLUMNS",
    "SubmittedTask",
    "TaskDetail",
    "cancel",
    "fetch_detail",
    "fetch_tasks",
    "prefect_run_url",
    "retry",
    "runs_frame",
    "submit",
    "task_row",
    "utc_timestamp",
]

logger = logging.getLogger(__name__)

_PAGE = 200  # the most runs, artifacts or logs the Prefect API returns at once
_MAX_LOGS = 2000

TASK_COLUMNS = [
    "task_id", "title", "status", "state", "kind", "repo", "ref", "priority",
    "created", "started", "finished", "duration_seconds", "cost_usd", "input_tokens",
    "output_tokens", "tokens", "turns", "files_changed", "branch", "work_pool", "worker",
    "parent_id", "is_fanout", "is_final", "error", "flow_run_id",
]  # fmt: skip

_STATE_STATUS: dict[StateType, str] = {
    StateType.SCHEDULED: "queued",
    StateType.PENDING: "queued",
    StateType.PAUSED: "queued",
    StateType.RUNNING: "running",
    StateType.CANCELLING: "cancelling",
    StateType.CANCELLED: "cancelled",
    StateType.COMPLETED: "succeeded",
    StateType.FAILED: "failed",
    StateType.CRASHED: "failed",
}


def prefect_run_url(settings: ConductorSettings, flow_run_id: str) -> str:
    """The run's page in the Prefect UI."""
    return f"{settings.server.ui}/runs/flow-run/{flow_run_id}"


# --------------------------------------------------------------------------- tasks


def _spec_of(run: FlowRun) -> TaskSpec | None:
    data = (run.parameters or {}).get("spec")
    if not isinstance(data, dict):
        return None
    try:
        return TaskSpec.model_validate(data)
    except ValidationError:
        return None


def _tag_value(tags: list[str], prefix: str) -> str | None:
    return next((t[len(prefix) :] for t in tags if t.startswith(prefix)), None)


def _status(run: FlowRun, result: TaskResult | None) -> tuple[str, bool]:
    state = run.state
    if state is None:
        return "queued", False
    final = state.is_final()
    if final and result is not None:
        return result.status.value, True
    if state.type is StateType.COMPLETED and state.name == "NeedsAttention":
        return "needs_attention", True
    if state.type is StateType.FAILED and state.name == "TimedOut":
        return "timed_out", True
    return _STATE_STATUS.get(state.type, "queued"), final


def utc_timestamp(value: datetime | None) -> pd.Timestamp:
    """A pandas timestamp in UTC (NaT for None)."""
    return pd.Timestamp(value).tz_convert("UTC") if value is not None else pd.NaT


def task_row(run: FlowRun, result: TaskResult | None, now: datetime) -> dict[str, Any]:
    """One task as a row of the tasks frame."""
    spec = _spec_of(run)
    tags = list(run.tags or [])
    status, final = _status(run, result)
    priority = spec.priority if spec else int(_tag_value(tags, "priority:") or 0)
    if result is not None and final:
        duration = result.duration_seconds
    elif run.start_time is not None and not final:
        duration = (now - run.start_time).total_seconds()
    else:
        duration = run.total_run_time.total_seconds()
    labels = run.labels or {}
    task_id = task_id_of(run)
    return {
        "task_id": task_id,
        "title": (result.title if result else "") or (spec.display_title if spec else task_id),
        "status": status,
        "state": run.state.name if run.state else "Scheduled",
        "kind": spec.kind if spec else (_tag_value(tags, "kind:") or "generic"),
        "repo": spec.repo if spec else (result.repo if result else ""),
        "ref": (spec.ref if spec else None) or "",
        "priority": priority,
        "created": utc_timestamp(run.created),
        "started": utc_timestamp(run.start_time),
        "finished": utc_timestamp(run.end_time if final else None),
        "duration_seconds": round(float(duration), 1),
        "cost_usd": result.cost_usd if result else 0.0,
        "input_tokens": result.input_tokens if result else 0,
        "output_tokens": result.output_tokens if result else 0,
        "tokens": (result.input_tokens + result.output_tokens) if result else 0,
        "turns": result.num_turns if result else 0,
        "files_changed": len(result.files_changed) if result else 0,
        "branch": (result.branch if result else None) or "",
        "work_pool": run.work_pool_name or "",
        "worker": str(labels.get("prefect.worker.name") or ""),
        "parent_id": (spec.parent_id if spec else None) or _tag_value(tags, "parent:") or "",
        "is_fanout": bool(spec.subtasks if spec else (result.subtasks if result else False)),
        "is_final": final,
        "error": (result.error if result else None) or "",
        "flow_run_id": str(run.id),
    }


def runs_frame(
    runs: list[FlowRun], results: dict[str, TaskResult], now: datetime | None = None
) -> pd.DataFrame:
    """The tasks frame (columns ``TASK_COLUMNS``) of flow runs and their results."""
    moment = now or datetime.now(UTC)
    rows = [task_row(r, results.get(task_id_of(r)), moment) for r in runs]
    frame = pd.DataFrame(rows, columns=TASK_COLUMNS)
    for column in ("created", "started", "finished"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


async def _read_tasks(settings: ConductorSettings, limit: int) -> pd.DataFrame:
    runs: list[FlowRun] = []
    results: dict[str, TaskResult] = {}
    async with api.api_client(settings) as client:
        while len(runs) < limit:  # the API returns at most 200 per request
            page = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["conductor"])),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=min(_PAGE, limit - len(runs)),
                offset=len(runs),
            )
            runs.extend(page)
            results.update(await read_results(client, [task_id_of(r) for r in page]))
            if len(page) < _PAGE:
                break
    return runs_frame(runs, results)


def fetch_tasks(settings: ConductorSettings, limit: int = 500) -> pd.DataFrame:
    """The newest conductor tasks, one row each (a copy: change it freely)."""
    frame = cached(settings, ("tasks", limit), lambda: _read_tasks(settings, limit))
    return frame.copy()


# --------------------------------------------------------------------------- one task


@dataclass
class TaskDetail:
    """One task as the detail page shows it."""

    task_id: str
    flow_run_id: str
    row: dict[str, Any]
    spec: TaskSpec | None
    result: TaskResult | None
    timeline: pd.DataFrame
    logs: pd.DataFrame
    report_markdown: str
    diff: str
    files: list[FileDiff]
    transcript: list[TranscriptEntry]
    transcript_source: Literal["file", "logs", "none"]
    prefect_url: str

    @property
    def is_final(self) -> bool:
        return bool(self.row["is_final"])


def _timeline(states: list[State[Any]], now: datetime) -> pd.DataFrame:
    ordered = sorted(states, key=lambda s: s.timestamp)
    rows = []
    for i, state in enumerate(ordered):
        end = ordered[i + 1].timestamp if i + 1 < len(ordered) else None
        if end is None and not state.is_final():
            end = now
        rows.append(
            {
                "state": state.name,
                "type": state.type.value,
                "at": utc_timestamp(state.timestamp),
                "until": utc_timestamp(end),
                "seconds": round((end - state.timestamp).total_seconds(), 1) if end else None,
                "message": state.message or "",
            }
        )
    columns = ["state", "type", "at", "until", "seconds", "message"]
    return pd.DataFrame(rows, columns=columns)


def _logs_frame(logs: list[Log]) -> pd.DataFrame:
    rows = [
        {
            "at": utc_timestamp(log.timestamp),
            "level": logging.getLevelName(log.level),
            "logger": log.name,
            "message": log.message,
        }
        for log in logs
    ]
    return pd.DataFrame(rows, columns=["at", "level", "logger", "message"])


async def _read_detail(settings: ConductorSettings, task_id: str) -> TaskDetail:
    async with api.api_client(settings) as client:
        run = await api.find_run(client, task_id)
        task_id = task_id_of(run)
        result = await read_result(client, task_id)
        states = await client.read_flow_run_states(run.id)
        logs = await api.read_task_logs(client, run, limit=_MAX_LOGS, newest=True)
        report = await api.read_report(client, task_id)
    now = datetime.now(UTC)
    logs_frame = _logs_frame(logs)
    patch: str | None = None
    transcript: list[TranscriptEntry] | None = None
    if result is not None:
        patch = await asyncio.to_thread(read_patch, result.patch_path)
        transcript = await asyncio.to_thread(transcript_from_jsonl, result.transcript_path)
    diff = patch or diff_from_report(report)
    source: Literal["file", "logs", "none"] = "file"
    if transcript is None:
        transcript = transcript_from_log_messages(logs_frame["message"].tolist())
        source = "logs" if transcript else "none"
    return TaskDetail(
        task_id=task_id,
        flow_run_id=str(run.id),
        row=task_row(run, result, now),
        spec=_spec_of(run),
        result=result,
        timeline=_timeline(states, now),
        logs=logs_frame,
        report_markdown=report,
        diff=diff,
        files=split_diff(diff),
        transcript=transcript,
        transcript_source=source,
        prefect_url=prefect_run_url(settings, str(run.id)),
    )


def fetch_detail(settings: ConductorSettings, task_id: str) -> TaskDetail:
    """Everything about one task (by task id or flow run id). NotFoundError if unknown."""
    return cached(settings, ("detail", task_id), lambda: _read_detail(settings, task_id))


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class SubmittedTask:
    task_id: str
    flow_run_id: str


def submit(settings: ConductorSettings, spec: TaskSpec) -> SubmittedTask:
    """Create the task's flow run. InputError when the deployment is not registered."""

    async def go() -> SubmittedTask:
        async with api.api_client(settings) as client:
            run = await api.submit_task(client, spec)
        return SubmittedTask(task_id_of(run), str(run.id))

    try:
        return run_sync(go)
    finally:
        clear_cache()


def cancel(settings: ConductorSettings, task_id: str) -> str:
    """Ask the task's run to stop; returns its new state name. InputError when it ended."""

    async def go() -> str:
        async with api.api_client(settings) as client:
            run = await api.cancel_task(client, task_id)
        return (run.state.name if run.state else None) or "Cancelling"

    try:
        return run_sync(go)
    finally:
        clear_cache()


def retry(settings: ConductorSettings, task_id: str) -> SubmittedTask:
    """Submit an ended task again as a new task. InputError while it still runs."""

    async def go() -> SubmittedTask:
        async with api.api_client(settings) as client:
            spec, run = await api.retry_task(client, task_id)
        return SubmittedTask(spec.id, str(run.id))

    try:
        return run_sync(go)
    finally:
        clear_cache()
