"""Run one agent: the real ``claude`` CLI, headless, in a workspace, within its limits.

``run_agent`` starts the CLI in its own process group, reads its stream-json output line by
line (lines of many megabytes included), writes every event to a redacted JSONL transcript,
and enforces three limits: the task's wall-clock timeout, an inactivity watchdog (no output
line for ``agent.inactivity_timeout_seconds``) and a short grace after the ``result`` line
for a CLI that lingers. However it ends (finished, timed out, cancelled), the whole process
group is stopped before ``run_agent`` returns or re-raises: no process is left behind.
The agent runs confined (``confinement``): its file tools and its sandboxed Bash write only
its worktree and its own temp folder, which is removed afterwards, and the files the CLI
leaves in its config folder are scrubbed of secrets.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from pydantic import BaseModel, ConfigDict, Field

from claude_conductor.agents.argv import (
    Redactor,
    build_argv,
    build_env,
    find_claude,
    prompt_on_stdin,
)
from claude_conductor.agents.confinement import (
    check_sandbox_available,
    confinement_for,
    may_run_bash,
    remove_temp_dir,
    scrub_agent_files,
)
from claude_conductor.agents.kinds import policy_for, render_prompt
from claude_conductor.agents.placement import LaunchRequest, get_placement
from claude_conductor.agents.process import new_mark, spawn, stop_group, wait_exit
from claude_conductor.agents.shell import tail_text
from claude_conductor.agents.status import decide_status
from claude_conductor.agents.stream import parse_line
from claude_conductor.errors import AgentError
from claude_conductor.models import (
    AgentEvent,
    ResultEvent,
    SystemInit,
    TaskSpec,
    TaskStatus,
    UnknownEvent,
)
from claude_conductor.settings import AgentSettings, ConductorSettings
from claude_conductor.system.temp_dirs import new_temp_dir

__all__ = ["AgentOutcome", "EventCallback", "run_agent"]

logger = logging.getLogger(__name__)

EventCallback = Callable[[AgentEvent], None]

_STDERR_KEEP_BYTES = 32 * 1024
_STDERR_DRAIN_SECONDS = 1.0
_EOF_EXIT_SECONDS = 5.0


class AgentOutcome(BaseModel):
    """How one agent run ended, with the CLI's own result when it reported one."""

    model_config = ConfigDict(frozen=True)

    status: TaskStatus = Field(description="How the run ended.")
    error: str | None = Field(default=None, description="Why it did not succeed, if it did not.")
    result: ResultEvent | None = Field(
        default=None, description="The CLI's result line (cost, tokens, turns), if it came."
    )
    exit_code: int | None = Field(
        default=None, description="The CLI's exit code; negative: killed by that signal."
    )
    session_id: str | None = Field(default=None, description="Claude Code session id.")
    model: str | None = Field(default=None, description="The model the agent used.")
    stderr_tail: str = Field(default="", description="The last lines of the CLI's stderr.")
    duration_seconds: float = Field(default=0.0, description="Wall time of the run.")


@dataclass
class _Run:
    """What one run has seen so far."""

    init: SystemInit | None = None
    result: ResultEvent | None = None
    timed_out: bool = False
    stalled: bool = False
    events: int = 0


class _StderrTail:
    def __init__(self) -> None:
        self.data = bytearray()

    async def pump(self, stream: asyncio.StreamReader | None) -> None:
        if stream is None:
            return
        while chunk := await stream.read(64 * 1024):
            self.data += chunk
            if len(self.data) > 2 * _STDERR_KEEP_BYTES:
                del self.data[:-_STDERR_KEEP_BYTES]


class _Follower:
    """Reads the CLI's stdout, records events, and watches for stalls."""

    def __init__(
        self,
        run: _Run,
        agent: AgentSettings,
        redactor: Redactor,
        transcript: IO[str],
        on_event: EventCallback | None,
    ) -> None:
        self.run, self.agent, self.redact = run, agent, redactor
        self.transcript, self.on_event = transcript, on_event

    def record(self, event: AgentEvent) -> None:
        self.run.events += 1
        if isinstance(event, SystemInit) and self.run.init is None:
            self.run.init = event
        elif isinstance(event, ResultEvent):
            self.run.result = event
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        self.transcript.write(json.dumps({"ts": stamp, **event.model_dump(mode="json")}) + "\n")
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                logger.exception("the on_event callback failed on a %s event", event.type)

    async def follow(self, process: asyncio.subprocess.Process) -> None:
        stdout = process.stdout
        assert stdout is not None, "spawned with stdout=PIPE"
        while self.run.result is None:
            try:
                line = await asyncio.wait_for(
                    stdout.readline(), timeout=self.agent.inactivity_timeout_seconds
                )
            except TimeoutError:
                self.run.stalled = True
                return
            except ValueError:  # longer than agent.max_line_bytes: skipped, not fatal
                self.record(UnknownEvent(raw_type="line_too_long", data={}))
                continue
            if not line:
                break
            for event in parse_line(self.redact(line.decode("utf-8", errors="replace"))):
                self.record(event)
            self.transcript.flush()
        linger = (
            self.agent.result_grace_seconds if self.run.result is not None else _EOF_EXIT_SECONDS
        )
        if await wait_exit(process, linger) is None:
            logger.info(
                "the agent (pid %d) is still running %.1fs after %s: stopping it",
                process.pid,
                linger,
                "its result" if self.run.result is not None else "closing its output",
            )


def _first(*values: str | None) -> str | None:
    return next((value for value in values if value), None)


async def _feed_stdin(process: asyncio.subprocess.Process, prompt: str) -> None:
    if process.stdin is None:
        return
    try:
        process.stdin.write(prompt.encode("utf-8"))
        await process.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        logger.warning("the agent closed its stdin before reading the whole prompt")
    finally:
        process.stdin.close()


async def run_agent(
    spec: TaskSpec,
    workspace: Path,
    settings: ConductorSettings,
    *,
    transcript_path: Path,
    config_dir: Path,
    on_event: EventCallback | None = None,
    base_env: Mapping[str, str] | None = None,
) -> AgentOutcome:
    """Run ``spec``'s agent in ``workspace`` and report how it went.

    ``config_dir`` becomes the agent's ``CLAUDE_CONFIG_DIR`` (one per agent); ``base_env``
    (default: this process's environment) supplies the API key and base URL. Raises
    ``AgentError`` when the agent cannot be started; a run that starts always returns an
    ``AgentOutcome``, except on cancellation, which is re-raised after the process group
    is stopped.
    """
    agent = settings.agent
    if not workspace.is_dir():
        raise AgentError(f"the workspace {str(workspace)!r} is not a directory")
    claude = find_claude(settings)
    confinement = confinement_for(workspace, new_temp_dir(), settings)
    policy = policy_for(spec)
    if confinement.sandbox and not may_run_bash(
        policy.permission_mode, policy.allowed_tools, policy.disallowed_tools
    ):
        # No Bash, nothing to sandbox: such a task runs where bubblewrap is not installed.
        confinement = confinement.model_copy(update={"sandbox": False})
    env = build_env(
        settings,
        config_dir,
        os.environ if base_env is None else base_env,
        temp_dir=confinement.temp_dir,
    )
    check_sandbox_available(confinement, env)
    session_id = str(uuid.uuid4())
    argv = build_argv(spec, claude, settings, session_id=session_id, confinement=confinement)
    prompt = render_prompt(spec)
    stdin_prompt = prompt_on_stdin(prompt)
    redactor = Redactor(env)
    config_dir.mkdir(parents=True, exist_ok=True)
    transcript_path.parent.mkdir(parents=True, exist_ok=True)

    placement = get_placement(settings)
    plan = placement.plan(
        LaunchRequest(
            task_id=spec.id,
            role="agent",
            argv=argv,
            env=env,
            workspace=workspace,
            timeout_seconds=spec.timeout_seconds,
            stdin_used=stdin_prompt,
        )
    )

    run = _Run()
    stderr = _StderrTail()
    mark = new_mark()
    started = time.monotonic()
    with transcript_path.open("a", encoding="utf-8") as transcript:
        try:
            confinement.temp_dir.mkdir(mode=0o700)
            process = await spawn(
                plan.argv,
                cwd=plan.cwd,
                env=plan.env,
                mark=mark,
                stdin=asyncio.subprocess.PIPE if stdin_prompt else asyncio.subprocess.DEVNULL,
                line_limit_bytes=agent.max_line_bytes,
            )
        except OSError as exc:
            remove_temp_dir(confinement)
            await plan.run_cleanup()
            raise AgentError(f"could not start the agent {str(plan.argv[0])!r}: {exc}") from exc
        logger.info(
            "agent for task %s started (%s placement): pid %d, kind %s, permission mode %s, in %s",
            spec.id,
            placement.name,
            process.pid,
            spec.kind,
            policy_for(spec).permission_mode,
            workspace,
        )
        helpers = [asyncio.create_task(stderr.pump(process.stderr))]
        if stdin_prompt:
            helpers.append(asyncio.create_task(_feed_stdin(process, prompt)))
        follower = _Follower(run, agent, redactor, transcript, on_event)
        try:
            try:
                async with asyncio.timeout(spec.timeout_seconds):
                    await follower.follow(process)
            except TimeoutError:
                run.timed_out = run.result is None
        finally:
            try:
                stopped = await stop_group(
                    process, grace_seconds=agent.kill_grace_seconds, mark=mark
                )
                if stopped:
                    logger.info("agent for task %s: process group %d stopped", spec.id, process.pid)
                await asyncio.wait(helpers, timeout=_STDERR_DRAIN_SECONDS)
            finally:
                for helper in helpers:
                    helper.cancel()
                transcript.flush()
                remove_temp_dir(confinement)
                scrub_agent_files(config_dir, redactor)
                await asyncio.shield(plan.run_cleanup())

    stderr_tail = redactor(tail_text(bytes(stderr.data)))
    status, error = decide_status(
        run.result,
        exit_code=process.returncode,
        timed_out=run.timed_out,
        stalled=run.stalled,
        timeout_seconds=spec.timeout_seconds,
        inactivity_timeout_seconds=agent.inactivity_timeout_seconds,
        max_turns=spec.max_turns,
        max_budget_usd=spec.max_budget_usd,
        stderr_tail=stderr_tail,
    )
    result = run.result
    outcome = AgentOutcome(
        status=status,
        error=error,
        result=result,
        exit_code=process.returncode,
        session_id=_first(
            result.session_id if result else None,
            run.init.session_id if run.init else None,
            session_id,
        ),
        model=_first(result.model if result else None, run.init.model if run.init else None),
        stderr_tail=stderr_tail,
        duration_seconds=round(time.monotonic() - started, 3),
    )
    logger.info(
        "agent for task %s ended %s in %.1fs (%d events, $%.4f)%s",
        spec.id,
        status.value,
        outcome.duration_seconds,
        run.events,
        result.total_cost_usd if result else 0.0,
        f": {error}" if error else "",
    )
    return outcome
