"""``submit_agent_task``: send a task to the agent pool and get a handle on it.

Under the hood it is Prefect's ``run_deployment`` on Conductor's ``conductor-task/run``
deployment (``conductor-fanout/run`` for a task with subtasks), on the work queue its priority
maps to, with the same run name and tags as ``conductor run``; inside a flow the run is linked
to it as a subflow. It talks to the Prefect API the caller's Prefect settings name
(``PREFECT_API_URL``), the same one the caller's flow reports to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from claude_conductor.api.dispatch import sync_or_awaitable
from claude_conductor.api.fields import task_from_fields
from claude_conductor.errors import InputError
from claude_conductor.models import TaskResult, TaskSpec, TaskStatus

__all__ = ["AgentTaskHandle", "asubmit_agent_task", "submit_agent_task", "submit_task"]

_DOOR = "submit_agent_task"


@dataclass(frozen=True)
class AgentTaskHandle:
    """A task sent to the agent pool. ``await handle`` (or ``handle.result()`` in sync code)
    waits for its ``TaskResult``; ``poll()`` returns it once it ended, else None;
    ``cancel()`` asks Prefect to stop it. Every method follows the same rule as
    ``run_agent_task``: awaitable in async code, a plain call in sync code; the ``a``-prefixed
    ones are always coroutines."""

    task_id: str
    flow_run_id: UUID

    async def apoll(self) -> TaskResult | None:
        """The task's result once its run ended, else None."""
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            run = await client.read_flow_run(self.flow_run_id)
            if run.state is None or not run.state.is_final():
                return None
            return await _result_of(client, self.task_id, run)

    async def aresult(
        self, timeout_seconds: float | None = None, poll_seconds: float = 1.0
    ) -> TaskResult:
        """Wait for the run to end and return its result; ``TimeoutError`` after
        ``timeout_seconds`` (the task keeps running: ``cancel()`` stops it)."""
        async with asyncio.timeout(timeout_seconds):
            while True:
                result = await self.apoll()
                if result is not None:
                    return result
                await asyncio.sleep(poll_seconds)

    async def acancel(self) -> None:
        """Ask Prefect to cancel the run (the worker stops the agent); a no-op once it ended."""
        from prefect.client.orchestration import get_client
        from prefect.states import Cancelling

        async with get_client() as client:
            run = await client.read_flow_run(self.flow_run_id)
            if run.state is not None and run.state.is_final():
                return
            await client.set_flow_run_state(
                self.flow_run_id, Cancelling(message="cancelled by the user"), force=True
            )

    def poll(self) -> Any:
        """``apoll`` in async code; its value in sync code."""
        return sync_or_awaitable(self.apoll())

    def result(self, timeout_seconds: float | None = None, poll_seconds: float = 1.0) -> Any:
        """``aresult`` in async code; its value in sync code."""
        return sync_or_awaitable(self.aresult(timeout_seconds, poll_seconds))

    def cancel(self) -> Any:
        """``acancel`` in async code; done at once in sync code."""
        return sync_or_awaitable(self.acancel())

    def __await__(self) -> Generator[Any, None, TaskResult]:
        return self.aresult().__await__()


async def _result_of(client: Any, task_id: str, run: Any) -> TaskResult:
    from claude_conductor.flows.results import read_result

    result = await read_result(client, task_id)
    if result is not None:
        return result
    state = run.state
    return TaskResult(
        task_id=task_id,
        status=TaskStatus.CANCELLED if state.is_cancelled() else TaskStatus.FAILED,
        error=f"run ended {state.name}: {state.message or 'no result was published'}",
    )


async def submit_task(spec: TaskSpec) -> AgentTaskHandle:
    """Create ``spec``'s flow run on the agent pool (linked to the calling flow, if any)."""
    from prefect.deployments import arun_deployment
    from prefect.exceptions import ObjectNotFound

    from claude_conductor.flows.identity import run_name, submission_tags
    from claude_conductor.work_pools.deployments import FANOUT_DEPLOYMENT, TASK_DEPLOYMENT
    from claude_conductor.work_pools.pools import queue_for_priority

    name = (FANOUT_DEPLOYMENT if spec.subtasks else TASK_DEPLOYMENT).full_name
    if spec.subtasks:
        # Resolve inheritance now: once serialized, every subtask field would count as set.
        spec = spec.model_copy(update={"subtasks": spec.expanded_subtasks()})
    try:
        run = await arun_deployment(
            name,
            parameters={"spec": spec.model_dump(mode="json")},
            flow_run_name=run_name(spec),
            tags=submission_tags(spec),
            work_queue_name=queue_for_priority(spec.priority),
            idempotency_key=spec.id,
            timeout=0,
            as_subflow=True,
        )
    except ObjectNotFound as exc:
        raise InputError(
            f"{_DOOR}: deployment {name!r} is not registered on this Prefect API; run "
            "`conductor up` (or `prefect deploy --all` in Conductor's repository) first, "
            "or point PREFECT_API_URL at Conductor's server"
        ) from exc
    return AgentTaskHandle(task_id=spec.id, flow_run_id=run.id)


async def asubmit_agent_task(**fields: Any) -> AgentTaskHandle:
    """``submit_agent_task`` for async code, typed: always a coroutine."""
    return await submit_task(task_from_fields(_DOOR, fields))


def submit_agent_task(**fields: Any) -> Any:
    """Send one task to the agent pool; returns an ``AgentTaskHandle`` (await it for the
    ``TaskResult``, or ``cancel()`` / ``poll()`` it).

    Keyword arguments are the ``TaskSpec`` fields, validated like ``run_agent_task``'s (an
    ``InputError`` before anything is submitted); ``subtasks`` makes a fan-out. A relative
    ``repo`` is made absolute from the current directory (workers run elsewhere). In async
    code it returns an awaitable of the handle; in sync code, the handle.
    """
    return sync_or_awaitable(submit_task(task_from_fields(_DOOR, fields)))
