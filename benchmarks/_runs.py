"""Submit flow runs to a Prefect API and time them, the same way for Conductor and for stock
Prefect. Every run's work writes a timestamp (seconds since the epoch) to its own file as the
first thing it does, so "work started" is the true moment, not a state change. The run's state
history (server timestamps, same clock) splits the time between submit and work into phases.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from _common import read_mark
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import WorkPoolUpdate
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, StateType

__all__ = [
    "PHASES",
    "Submit",
    "backlog",
    "burst",
    "concurrent_submissions",
    "latency",
    "wait_final",
]

#: (client, index, file the run's work writes its start time to) -> the new flow run's id
Submit = Callable[[PrefectClient, int, Path], Awaitable[UUID]]

PHASES = (
    ("submit_to_pending", "submit -> Pending (the worker polled and took it)"),
    ("pending_to_running", "Pending -> Running (flow-run process started, engine set up)"),
    ("running_to_work", "Running -> work starts (inside the flow before the work)"),
    ("work_to_final", "work starts -> final state (work, then wrap-up)"),
)


async def wait_final(
    client: PrefectClient, ids: list[UUID], timeout_seconds: float, poll_seconds: float
) -> list[FlowRun]:
    pending = set(ids)
    done: dict[UUID, FlowRun] = {}
    deadline = time.monotonic() + timeout_seconds
    while pending:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=sorted(pending))), limit=200
        )
        for run in runs:
            if run.state is not None and run.state.is_final():
                done[run.id] = run
                pending.discard(run.id)
        if not pending:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pending)} of {len(ids)} runs not final in {timeout_seconds}s")
        await asyncio.sleep(poll_seconds)
    return [done[i] for i in ids]


async def _timeline(
    client: PrefectClient, run: FlowRun, submitted: float, mark: Path
) -> dict[str, Any]:
    first: dict[StateType, float] = {}
    for state in sorted(await client.read_flow_run_states(run.id), key=lambda s: s.timestamp):
        first.setdefault(state.type, state.timestamp.timestamp())
    assert run.state is not None
    final = run.state.timestamp.timestamp()
    pending = first.get(StateType.PENDING)
    running = first.get(StateType.RUNNING)
    work = read_mark(mark)

    def gap(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(b - a, 3)

    out: dict[str, Any] = {
        "state": run.state.name,
        "submit_to_work": gap(submitted, work),
        "submit_to_running": gap(submitted, running),
        "submit_to_final": gap(submitted, final),
        "submit_to_pending": gap(submitted, pending),
        "pending_to_running": gap(pending, running),
        "running_to_work": gap(running, work),
        "work_to_final": gap(work, final),
    }
    tasks = await client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
    )
    if tasks and running is not None:
        out["task_runs"] = {
            t.name.rsplit("-", 1)[0]: {
                "start_after_running": gap(running, t.start_time.timestamp()),
                "seconds": gap(t.start_time.timestamp(), t.end_time.timestamp()),
            }
            for t in tasks
            if t.start_time is not None and t.end_time is not None
        }
    return out


async def latency(
    client: PrefectClient,
    submit: Submit,
    marks: Path,
    runs: int,
    *,
    jitter_seconds: float,
    rng: random.Random,
    timeout_seconds: float = 300.0,
) -> list[dict[str, Any]]:
    """``runs`` runs one after the other, each alone on the stack. Before each, a random pause
    of up to ``jitter_seconds`` (the worker's poll interval) so submissions fall at random
    points of the polling cycle instead of always just after the previous run ended."""
    out = []
    for index in range(runs):
        await asyncio.sleep(rng.uniform(0, jitter_seconds))
        mark = marks / f"latency-{index}.txt"
        submitted = time.time()
        run_id = await submit(client, index, mark)
        [run] = await wait_final(client, [run_id], timeout_seconds, poll_seconds=0.25)
        out.append(await _timeline(client, run, submitted, mark))
    return out


def _busy_cpu_seconds() -> float:
    """CPU time spent by the whole machine since boot, idle and iowait excluded."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


async def burst(
    client: PrefectClient, submit: Submit, marks: Path, tasks: int, timeout_seconds: float = 1800
) -> dict[str, Any]:
    """Submit ``tasks`` runs back to back; wall time from the first submission until the last
    run's final state (its server timestamp). Also the CPU time the whole machine spent
    meanwhile, per task (server, workers, flow-run processes; and anything else running)."""
    cpu_before = _busy_cpu_seconds()
    began = time.time()
    ids = []
    submit_seconds: list[float] = []
    for index in range(tasks):
        one = time.perf_counter()
        ids.append(await submit(client, index, marks / f"burst-{index}.txt"))
        submit_seconds.append(time.perf_counter() - one)
    submitted = time.time()
    runs = await wait_final(client, ids, timeout_seconds, poll_seconds=1.0)
    cpu = _busy_cpu_seconds() - cpu_before
    end = max(run.state.timestamp.timestamp() for run in runs if run.state is not None)
    starts = [read_mark(marks / f"burst-{index}.txt") for index in range(tasks)]
    waits = [s - began for s in starts if s is not None]
    wall = end - began
    not_completed = [
        {
            "id": str(r.id),
            "state": r.state.name if r.state else None,
            "message": (r.state.message or "")[:300] if r.state else None,
        }
        for r in runs
        if r.state is None or not r.state.is_completed()
    ]
    return {
        "tasks": tasks,
        "completed": tasks - len(not_completed),
        "not_completed": not_completed,
        "wall_seconds": round(wall, 2),
        "tasks_per_second": round(tasks / wall, 3),
        "submit_seconds": round(submitted - began, 2),
        "one_submission_p50_seconds": round(statistics.median(submit_seconds), 3),
        "one_submission_max_seconds": round(max(submit_seconds), 3),
        "machine_cpu_seconds_per_task": round(cpu / tasks, 2),
        "first_work_start_seconds": round(min(waits), 2) if waits else None,
        "median_work_start_seconds": round(statistics.median(waits), 2) if waits else None,
    }


async def backlog(
    client: PrefectClient,
    submit: Submit,
    marks: Path,
    tasks: int,
    pool: str,
    timeout_seconds: float = 3600,
) -> dict[str, Any]:
    """Throughput from a pre-created backlog: the pool is paused, ``tasks`` runs are created,
    the pool is resumed; wall time from the resume to the last final state (its server
    timestamp). Submission cost is not in it."""
    await client.update_work_pool(pool, WorkPoolUpdate(is_paused=True))
    try:
        ids = [
            await submit(client, index, marks / f"backlog-{index}.txt") for index in range(tasks)
        ]
    finally:
        cpu_before = _busy_cpu_seconds()
        began = time.time()
        await client.update_work_pool(pool, WorkPoolUpdate(is_paused=False))
    runs = await wait_final(client, ids, timeout_seconds, poll_seconds=1.0)
    cpu = _busy_cpu_seconds() - cpu_before
    end = max(run.state.timestamp.timestamp() for run in runs if run.state is not None)
    starts = [read_mark(marks / f"backlog-{index}.txt") for index in range(tasks)]
    completed = sum(1 for r in runs if r.state is not None and r.state.is_completed())
    wall = end - began
    return {
        "tasks": tasks,
        "completed": completed,
        "wall_seconds": round(wall, 2),
        "tasks_per_second": round(tasks / wall, 3),
        "first_work_start_seconds": round(min(s for s in starts if s) - began, 2)
        if any(starts)
        else None,
        "machine_cpu_seconds_per_task": round(cpu / tasks, 2),
    }


async def concurrent_submissions(
    api_url: str,
    deployment_id: UUID,
    bodies: list[dict[str, Any]],
    auth: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """``len(bodies)`` flow runs created at once, as many callers of ``run_deployment`` would:
    one POST each (``bodies``: the request bodies), all in flight together, and no client-side
    retry, so every refusal the server answers (503 when it is overloaded, 429 ...) is
    counted. Returns the new runs' ids too (to wait for them)."""
    url = f"{api_url.rstrip('/')}/deployments/{deployment_id}/create_flow_run"
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(timeout=120, limits=limits, auth=auth, trust_env=False) as http:
        ids: list[UUID] = []

        async def one(body: dict[str, Any]) -> tuple[int | str, float]:
            began = time.perf_counter()
            try:
                response = await http.post(url, json=body)
            except httpx.HTTPError as exc:
                return type(exc).__name__, time.perf_counter() - began
            if response.is_success:
                ids.append(UUID(response.json()["id"]))
            return response.status_code, time.perf_counter() - began

        began = time.perf_counter()
        answers = await asyncio.gather(*(one(body) for body in bodies))
        wall = time.perf_counter() - began
    codes: dict[str, int] = {}
    for code, _ in answers:
        codes[str(code)] = codes.get(str(code), 0) + 1
    seconds = sorted(s for _, s in answers)
    return {
        "calls": len(bodies),
        "ids": [str(i) for i in ids],
        "status_codes": codes,
        "refused": sum(n for c, n in codes.items() if not c.startswith("2")),
        "refused_503": codes.get("503", 0),
        "wall_seconds": round(wall, 3),
        "one_call_p50_seconds": round(statistics.median(seconds), 3),
        "one_call_max_seconds": round(seconds[-1], 3),
    }
