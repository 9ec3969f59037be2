"""``run_agent_task``: one Conductor task run right here, inside the caller's flow.

The task is Conductor's own ``conductor-task`` flow called as a subflow: the same steps
(prepare-workspace, run-agent, verify when there is a verify command, collect-result), the same branch, result and report
artifacts, the same name and tags, so ``conductor tasks list|show|logs`` and the dashboard show
it like any other task. The agent runs as a child process of the caller's process, with the
caller's environment (``ANTHROPIC_API_KEY`` or ``ANTHROPIC_BASE_URL``) and Conductor settings.
"""

from __future__ import annotations

import functools
from typing import Any

from claude_conductor.api.dispatch import sync_or_awaitable
from claude_conductor.api.fields import task_from_fields
from claude_conductor.errors import InputError
from claude_conductor.models import TaskResult, TaskSpec, TaskStatus

__all__ = ["arun_agent_task", "run_agent_task", "run_task"]

_DOOR = "run_agent_task"


def _runnable(fields: dict[str, Any]) -> TaskSpec:
    spec = task_from_fields(_DOOR, fields)
    if spec.subtasks:
        raise InputError(
            f"{_DOOR}: field 'subtasks': runs one task in this flow; run several with "
            "asyncio.gather(run_agent_task(...), ...), or send a fan-out task to the agent "
            "pool with submit_agent_task(subtasks=[...])",
            field="subtasks",
        )
    return spec


def _name_of_current_run() -> str:
    """The subflow's run name, from its validated ``spec`` (read by Prefect's engine as the
    run starts, so its own log lines carry the name too)."""
    from prefect.context import FlowRunContext

    from claude_conductor.flows.identity import run_name

    ctx = FlowRunContext.get()
    spec = ctx.parameters["spec"] if ctx is not None and ctx.parameters else None
    return run_name(spec) if isinstance(spec, TaskSpec) else "conductor-task"


@functools.cache
def _task_flow() -> Any:
    """``conductor-task``, named after its task (built once: a flow computes its parameter
    schema when it is made)."""
    from claude_conductor.flows.task_flow import conductor_task

    return conductor_task.with_options(flow_run_name=_name_of_current_run)


async def run_task(spec: TaskSpec) -> TaskResult:
    """Run ``spec`` as a ``conductor-task`` subflow of the current flow (a flow run of its own
    outside one) and return its result, whatever its status. Input the steps refuse (a
    repository that vanished) raises its ``InputError``."""
    from prefect import tags

    from claude_conductor.flows.identity import submission_tags

    with tags(*submission_tags(spec)):
        state = await _task_flow()(spec=spec, return_state=True)
    data = await state.aresult(raise_on_failure=False)
    if isinstance(data, BaseException):
        raise data
    if isinstance(data, dict):
        return TaskResult.model_validate(data)
    return TaskResult(  # the run ended before collecting a result (cancelled, crashed)
        task_id=spec.id,
        kind=spec.kind,
        title=spec.display_title,
        status=TaskStatus.CANCELLED if state.is_cancelled() else TaskStatus.FAILED,
        repo=spec.repo,
        error=f"run ended {state.name}: {state.message or 'no result was collected'}",
    )


async def arun_agent_task(**fields: Any) -> TaskResult:
    """``run_agent_task`` for async code, typed: always a coroutine."""
    return await run_task(_runnable(fields))


def run_agent_task(**fields: Any) -> Any:
    """Run one agent task inside the calling flow and return its ``TaskResult``.

    Keyword arguments are the ``TaskSpec`` fields (``kind``, ``prompt``, ``repo``,
    ``max_budget_usd``, ...; see the README's task fields). A relative ``repo`` is taken from
    the current directory. Bad input raises ``InputError`` at once, naming the field, the value
    and the fix, before anything is created.

    In async code (an async flow) it returns an awaitable: ``await run_agent_task(...)``, and
    several run in parallel with ``asyncio.gather``. In sync code it runs to the end and
    returns the ``TaskResult``. Whatever the task's status, the result says it
    (``result.status``, ``result.error``); it does not raise for a failed task.
    """
    return sync_or_awaitable(run_task(_runnable(fields)))
