"""The fan-out flow: each subtask becomes its own ``conductor-task`` flow run on the agent pool
(so any worker in any tier can take it); the parent waits for all of them and publishes one
table. A failing subtask never loses the others' results.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State
from prefect.deployments import arun_deployment
from prefect.states import Completed, Failed

from claude_conductor.flows.identity import adopt_flow_run, run_name, submission_tags
from claude_conductor.flows.report import fanout_rows
from claude_conductor.flows.results import UNPERSISTED_RESULT_STORAGE, publish_result, read_result
from claude_conductor.models import TaskResult, TaskSpec, TaskStatus
from claude_conductor.work_pools import deployments

__all__ = ["TASK_DEPLOYMENT", "aggregate", "conductor_fanout", "submission_tags"]

TASK_DEPLOYMENT = deployments.TASK_DEPLOYMENT.full_name
_POLL_SECONDS = 1.0


def aggregate(parent: TaskSpec, results: list[TaskResult], started_at: datetime) -> TaskResult:
    """The parent's result: succeeded only when every subtask did; totals summed."""
    ok = all(r.status is TaskStatus.SUCCEEDED for r in results)
    bad = [r for r in results if r.status is not TaskStatus.SUCCEEDED]
    finished = datetime.now(UTC)
    return TaskResult(
        task_id=parent.id,
        kind=parent.kind,
        title=parent.display_title,
        status=TaskStatus.SUCCEEDED if ok else TaskStatus.FAILED,
        summary="\n".join(f"- {r.task_id}: {r.status.value} {r.title}" for r in results),
        repo=parent.repo,
        files_changed=sorted({f for r in results for f in r.files_changed}),
        cost_usd=round(sum(r.cost_usd for r in results), 6),
        input_tokens=sum(r.input_tokens for r in results),
        output_tokens=sum(r.output_tokens for r in results),
        num_turns=sum(r.num_turns for r in results),
        duration_seconds=round((finished - started_at).total_seconds(), 3),
        error=None
        if ok
        else f"{len(bad)} of {len(results)} subtasks did not succeed: "
        + ", ".join(f"{r.task_id} ({r.status.value})" for r in bad),
        started_at=started_at,
        finished_at=finished,
        subtasks=results,
    )


async def _run_subtask(sub: TaskSpec) -> TaskResult:
    from claude_conductor.work_pools.pools import queue_for_priority

    run = await arun_deployment(
        TASK_DEPLOYMENT,
        work_queue_name=queue_for_priority(sub.priority),
        parameters={"spec": sub.model_dump(mode="json")},
        flow_run_name=run_name(sub),
        tags=submission_tags(sub),
        poll_interval=_POLL_SECONDS,
        as_subflow=True,
    )
    async with get_client() as client:
        result = await read_result(client, sub.id)
    if result is not None:
        return result
    state = run.state
    status = TaskStatus.CANCELLED if state and state.is_cancelled() else TaskStatus.FAILED
    message = state.message if state and state.message else "the subtask ended without a result"
    return TaskResult(
        task_id=sub.id,
        kind=sub.kind,
        title=sub.display_title,
        status=status,
        repo=sub.repo,
        error=f"subtask run ended {state.name if state else 'unknown'}: {message}",
    )


@flow(name="conductor-fanout", persist_result=False, result_storage=UNPERSISTED_RESULT_STORAGE)
async def conductor_fanout(spec: TaskSpec) -> State[Any]:
    """Run a task's subtasks in parallel as their own flow runs and aggregate their results."""
    parent = await adopt_flow_run(spec)
    # Subtasks arrive already expanded by the submitter (ids, repo and limits inherited);
    # expanding again is harmless for those and covers specs submitted another way.
    subs = parent.expanded_subtasks()
    logger = get_run_logger()
    logger.info("fan-out %s: %d subtasks", parent.id, len(subs))
    started_at = datetime.now(UTC)
    outcomes = await asyncio.gather(*(_run_subtask(s) for s in subs), return_exceptions=True)
    results: list[TaskResult] = []
    for sub, outcome in zip(subs, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            logger.error("subtask %s could not be run: %s", sub.id, outcome)
            outcome = TaskResult(
                task_id=sub.id,
                kind=sub.kind,
                title=sub.display_title,
                status=TaskStatus.FAILED,
                repo=sub.repo,
                error=f"could not run: {outcome}",
            )
        results.append(outcome)
    report = aggregate(parent, results, started_at)
    await acreate_table_artifact(
        key=f"fanout-{parent.id}",
        table=fanout_rows(results),
        description=f"Subtasks of {parent.id}: {report.error or 'all succeeded'}",
    )
    await publish_result(report)
    data = report.model_dump(mode="json")
    if report.ok:
        return Completed(message="all subtasks succeeded", data=data)
    return Failed(message=report.error or "some subtasks failed", data=data)
