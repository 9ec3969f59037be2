"""The flow that runs one conductor task: one flow run per task, three or four coarse
Prefect tasks (prepare, work, verify when the task has a verify command, collect). Logic lives in ``steps``; this module only orchestrates.

The flow takes a typed ``TaskSpec`` (the Prefect UI's Run form shows its fields); whoever
started the run, it adopts the task's id, name and tags first (``identity``).

Final Prefect state mirrors the task status: succeeded -> Completed, needs_attention ->
Completed named "NeedsAttention", failed/timed_out -> Failed, cancelled -> Cancelled.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.states import Cancelled, Completed, Failed

from claude_conductor.agents.argv import redact
from claude_conductor.agents.process import kill_registered_groups
from claude_conductor.credentials import agent_base_env
from claude_conductor.errors import AgentError, InputError
from claude_conductor.flows import steps
from claude_conductor.flows.identity import adopt_flow_run
from claude_conductor.flows.results import UNPERSISTED_RESULT_STORAGE, publish_result
from claude_conductor.models import AgentEvent, TaskResult, TaskSpec, TaskStatus, VerifyResult
from claude_conductor.settings import run_settings
from claude_conductor.workspaces.worktree import Workspace

__all__ = ["conductor_task", "run_one"]


class AgentCrashed(AgentError):
    """The agent process died without a result (killed from outside, OOM): worth a retry."""

    def __init__(self, outcome: steps.WorkOutcome) -> None:
        super().__init__(outcome.error or "the agent process died without a result")
        self.outcome = outcome


def _not_bad_input(task: Any, task_run: Any, state: State[Any]) -> bool:
    try:
        state.result()
    except InputError:
        return False
    except Exception:
        return True
    return True


@task(
    name="prepare-workspace",
    retries=1,
    retry_delay_seconds=1,
    cache_policy=NO_CACHE,
    retry_condition_fn=_not_bad_input,
)
async def prepare_workspace(spec: TaskSpec) -> Workspace:
    return await asyncio.to_thread(steps.prepare, spec, run_settings())


@task(name="run-agent", cache_policy=NO_CACHE)
async def run_work(spec: TaskSpec, ws: Workspace) -> steps.WorkOutcome:
    logger = get_run_logger()
    env = await agent_base_env(run_settings())  # the credentials block, when one is set

    def on_event(event: AgentEvent) -> None:
        logger.info("agent %s", redact(event.describe(), env))

    outcome = await steps.do_work(spec, ws, run_settings(), on_event=on_event, base_env=env)
    agent = outcome.agent
    if (
        agent is not None
        and agent.result is None
        and outcome.status is TaskStatus.FAILED
        and (agent.exit_code or 0) < 0
    ):
        raise AgentCrashed(outcome)
    return outcome


@task(name="verify", cache_policy=NO_CACHE)
async def verify_work(spec: TaskSpec, ws: Workspace) -> VerifyResult | None:
    return await steps.run_verify(spec, ws, run_settings())


@task(name="collect-result", cache_policy=NO_CACHE)
async def collect_result(
    spec: TaskSpec,
    ws: Workspace,
    work: steps.WorkOutcome,
    verify: VerifyResult | None,
    started_at: datetime,
    started_monotonic: float,
) -> TaskResult:
    settings = run_settings()
    result = await asyncio.to_thread(
        steps.collect,
        spec,
        ws,
        work,
        verify,
        settings,
        started_at=started_at,
        started_monotonic=started_monotonic,
    )
    await asyncio.to_thread(steps.write_result, result, settings)
    return result


async def run_one(spec: TaskSpec) -> TaskResult:
    """The body of a task flow run (also used by the fan-out flow's tests)."""
    started_at, t0 = datetime.now(UTC), time.monotonic()
    ws = await prepare_workspace(spec)
    try:
        work = await run_work.with_options(retries=spec.retries, retry_delay_seconds=1)(spec, ws)
    except AgentCrashed as exc:
        work = exc.outcome
    verify = None
    if work.status is TaskStatus.SUCCEEDED and spec.verify:  # no empty task run (API writes)
        verify = await verify_work(spec, ws)
    result = await collect_result(spec, ws, work, verify, started_at, t0)
    await publish_result(result)
    return result


def _final_state(result: TaskResult) -> State[Any]:
    data = result.model_dump(mode="json")
    status = result.status
    if status is TaskStatus.SUCCEEDED:
        return Completed(message="succeeded", data=data)
    if status is TaskStatus.NEEDS_ATTENTION:
        return Completed(
            name="NeedsAttention", message=result.error or "needs attention", data=data
        )
    if status is TaskStatus.CANCELLED:
        return Cancelled(message=result.error or "cancelled", data=data)
    name = "TimedOut" if status is TaskStatus.TIMED_OUT else "Failed"
    return Failed(name=name, message=result.error or status.value, data=data)


def _kill_agents(flow: Any, flow_run: Any, state: State[Any]) -> None:
    """Cancellation/crash hook: no agent outlives its flow run."""
    kill_registered_groups()


@flow(
    name="conductor-task",
    log_prints=False,
    persist_result=False,
    result_storage=UNPERSISTED_RESULT_STORAGE,
    on_cancellation=[_kill_agents],
    on_crashed=[_kill_agents],
)
async def conductor_task(spec: TaskSpec) -> State[Any]:
    """Run one Conductor task with a Claude Code agent (or a shell command); its result and
    report are published as artifacts of this run."""
    spec = await adopt_flow_run(spec)
    get_run_logger().info("task %s (%s) on %s", spec.id, spec.kind, spec.repo)
    result = await run_one(spec)
    return _final_state(result)
