"""The steps of one task as plain functions: prepare the workspace, do the work (agent or
command), verify, collect the result. Flows wrap these as coarse Prefect tasks; ``conductor run
--local`` calls ``execute_task`` directly. Nothing here imports Prefect.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from claude_conductor.agents.argv import build_shell_env
from claude_conductor.agents.placement import get_placement
from claude_conductor.agents.runtime import AgentOutcome, run_agent
from claude_conductor.agents.shell import run_shell
from claude_conductor.flows.stopping import stop_reason
from claude_conductor.models import AgentEvent, TaskResult, TaskSpec, TaskStatus, VerifyResult
from claude_conductor.redaction import secret_values
from claude_conductor.settings import ConductorSettings
from claude_conductor.workspaces.source import resolve_source
from claude_conductor.workspaces.worktree import (
    Workspace,
    WorkspaceChanges,
    create_workspace,
    finalize_workspace,
    remove_workspace,
)

__all__ = [
    "WorkOutcome",
    "collect",
    "do_work",
    "execute_task",
    "prepare",
    "result_dir",
    "run_verify",
    "write_result",
]

logger = logging.getLogger(__name__)

EventCallback = Callable[[AgentEvent], None]


@dataclass(frozen=True)
class WorkOutcome:
    """What the work step produced, whichever kind of task it was."""

    status: TaskStatus
    error: str | None
    summary: str
    agent: AgentOutcome | None = None
    command: VerifyResult | None = None


def result_dir(spec: TaskSpec, settings: ConductorSettings) -> Path:
    return settings.results_dir / spec.id


def prepare(spec: TaskSpec, settings: ConductorSettings) -> Workspace:
    """Validate the repository and ref, then make the task's worktree. Blocking."""
    source = resolve_source(spec.repo, spec.ref, settings)
    return create_workspace(spec, source, settings)


async def do_work(
    spec: TaskSpec,
    ws: Workspace,
    settings: ConductorSettings,
    *,
    on_event: EventCallback | None = None,
    base_env: Mapping[str, str] | None = None,
) -> WorkOutcome:
    """Run the agent (or the command) in the workspace. Cancellation is reported, not raised."""
    out_dir = result_dir(spec, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(base_env if base_env is not None else os.environ)
    try:
        if spec.kind == "command":
            assert spec.command is not None  # guaranteed by TaskSpec's validator
            cmd = await run_shell(
                spec.command,
                ws.path,
                spec.timeout_seconds,
                build_shell_env(settings, env),
                placement=get_placement(settings),
                task_id=spec.id,
            )
            return _command_outcome(cmd)
        agent = await run_agent(
            spec,
            ws.path,
            settings,
            transcript_path=out_dir / "transcript.jsonl",
            config_dir=settings.agents_dir / spec.id,
            on_event=on_event,
            base_env=env,
        )
    except asyncio.CancelledError:
        # The runtime has already killed the agent's process group.
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return WorkOutcome(TaskStatus.CANCELLED, stop_reason(settings), "")
    summary = agent.result.result if agent.result else ""
    return WorkOutcome(agent.status, agent.error, summary, agent=agent)


def _command_outcome(cmd: VerifyResult) -> WorkOutcome:
    if cmd.timed_out:
        return WorkOutcome(
            TaskStatus.TIMED_OUT,
            f"command timed out after {cmd.duration_seconds:.0f}s",
            "",
            command=cmd,
        )
    if cmd.exit_code == 0:
        return WorkOutcome(TaskStatus.SUCCEEDED, None, cmd.output_tail, command=cmd)
    return WorkOutcome(
        TaskStatus.FAILED,
        f"command {cmd.command!r} exited with code {cmd.exit_code}",
        cmd.output_tail,
        command=cmd,
    )


async def run_verify(
    spec: TaskSpec,
    ws: Workspace,
    settings: ConductorSettings,
    base_env: Mapping[str, str] | None = None,
) -> VerifyResult | None:
    """Run the task's ``verify`` command where its agent ran, with the agent's environment."""
    if not spec.verify:
        return None
    env = build_shell_env(settings, base_env if base_env is not None else os.environ)
    return await run_shell(
        spec.verify,
        ws.path,
        spec.timeout_seconds,
        env,
        placement=get_placement(settings),
        task_id=spec.id,
    )


def collect(
    spec: TaskSpec,
    ws: Workspace,
    work: WorkOutcome,
    verify: VerifyResult | None,
    settings: ConductorSettings,
    *,
    started_at: datetime,
    started_monotonic: float,
    base_env: Mapping[str, str] | None = None,
) -> TaskResult:
    """Commit what changed on the branch, decide the final status, tidy the worktree. Blocking.

    A change that adds a secret (of ``base_env``, default this process's environment, or of
    the settings) is not committed: the task then needs attention, naming the files."""
    out_dir = result_dir(spec, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    message = f"conductor: {spec.display_title}\n\nTask {spec.id} ({spec.kind})."
    env = os.environ if base_env is None else base_env
    secrets = {**secret_values(env), **settings.secret_values()}
    changes: WorkspaceChanges = finalize_workspace(ws, message, out_dir, secrets=secrets)
    status, error = work.status, work.error
    if changes.withheld_reason is not None:
        if status in (TaskStatus.SUCCEEDED, TaskStatus.NEEDS_ATTENTION):
            status = TaskStatus.NEEDS_ATTENTION
        error = f"{error}; {changes.withheld_reason}" if error else changes.withheld_reason
    if status is TaskStatus.SUCCEEDED and verify is not None and verify.exit_code != 0:
        status = TaskStatus.FAILED
        what = "timed out" if verify.timed_out else f"exited with code {verify.exit_code}"
        error = f"verify command {verify.command!r} {what}"
    keep = status is not TaskStatus.SUCCEEDED
    if not keep:
        remove_workspace(ws)
    agent = work.agent
    res = agent.result if agent else None
    return TaskResult(
        task_id=spec.id,
        kind=spec.kind,
        title=spec.display_title,
        status=status,
        summary=work.summary,
        repo=spec.repo,
        branch=ws.branch,
        base_commit=ws.base_commit,
        head_commit=changes.head_commit,
        files_changed=list(changes.files_changed),
        diff_stats=changes.diff_stats,
        patch_path=str(changes.patch_path) if changes.patch_path else None,
        cost_usd=res.total_cost_usd if res else 0.0,
        input_tokens=res.input_tokens if res else 0,
        output_tokens=res.output_tokens if res else 0,
        num_turns=res.num_turns if res else 0,
        session_id=agent.session_id if agent else None,
        model=agent.model if agent else None,
        duration_seconds=round(time.monotonic() - started_monotonic, 3),
        permission_denials=list(res.permission_denials) if res else [],
        verify=verify if verify is not None else work.command,
        error=error,
        transcript_path=str(out_dir / "transcript.jsonl") if agent else None,
        workspace_path=str(ws.path) if keep else None,
        started_at=started_at,
        finished_at=datetime.now(UTC),
    )


def write_result(result: TaskResult, settings: ConductorSettings) -> Path:
    path = settings.results_dir / result.task_id / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    return path


async def execute_task(
    spec: TaskSpec,
    settings: ConductorSettings,
    *,
    on_event: EventCallback | None = None,
    base_env: Mapping[str, str] | None = None,
) -> TaskResult:
    """Run one task end to end in this process. Bad input raises before anything is created."""
    started_at, t0 = datetime.now(UTC), time.monotonic()
    ws = await asyncio.to_thread(prepare, spec, settings)
    work = await do_work(spec, ws, settings, on_event=on_event, base_env=base_env)
    verify = None
    if work.status is TaskStatus.SUCCEEDED:
        verify = await run_verify(spec, ws, settings, base_env)
    result = await asyncio.to_thread(
        collect,
        spec,
        ws,
        work,
        verify,
        settings,
        started_at=started_at,
        started_monotonic=t0,
        base_env=base_env,
    )
    await asyncio.to_thread(write_result, result, settings)
    return result
