"""One load-generator process of ``control_plane_load.py``: N virtual agents (asyncio), each
doing to the Prefect API what a running ``conductor-task`` flow run does, task after task,
until the step ends. Run as ``python benchmarks/_virtual_agent.py OUT.json``: it prints ``ready`` once
imported, reads its configuration (one JSON line) from stdin, and writes its figures to OUT.

The request sequence mirrors a real run traced on this machine (Prefect 3.8.8, a process
worker, a demo task against the scripted model; see ``README.md``):

- submit (``claude_conductor.client.tasks.submit_task``): read the deployment by name, create
  the flow run (parameters = a TaskSpec, tags = Conductor's);
- the worker: read deployment and flow, propose Pending, emit ``worker.submitted-flow-run``,
  set the run's worker labels, propose Pending ("Submitting"), record the infrastructure PID,
  send its two log lines; at the end emit ``worker.executed-flow-run``;
- the flow-run process (its own HTTP client and events websocket, as each agent process has):
  read run and deployment, API version checks, the pull-step event and logs, update the run,
  propose Running, read what its events relate to, a heartbeat event every
  ``heartbeat_seconds``, the four task runs (prepare-workspace, run-agent, verify,
  collect-result) as Pending/Running/Completed events (Prefect 3 creates task runs client-side
  and records them from events), agent log lines batched every ``log_batch_seconds`` (Prefect's
  ``APILogWorker`` default: 2 s), the two result artifacts (``report-<id>`` markdown,
  ``result-<id>`` the TaskResult) and their events, and Completed.

Not simulated: the agent's own work (no ``claude``, no git), worker polling and worker
heartbeats (they scale with workers, not tasks), the dashboard and ``--wait`` readers.
Every HTTP attempt is timed at the transport (retries included) and labelled by method and
path template.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import sys
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import ArtifactCreate, LogCreate
from prefect.client.schemas.objects import FlowRunPolicy
from prefect.events.clients import PrefectEventsClient
from prefect.events.schemas.events import Event
from prefect.states import Completed, Pending, Running

from claude_conductor.client.tasks import submit_task
from claude_conductor.flows.identity import task_id_of
from claude_conductor.flows.report import task_markdown
from claude_conductor.flows.results import RESULT_ARTIFACT_TYPE, report_key, result_key
from claude_conductor.models import TaskResult, TaskSpec, TaskStatus

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TASKS = ("prepare-workspace", "run-agent", "verify", "collect-result")
_PROMPT = (
    "Add input validation to the settings loader: reject unknown keys with one clear line "
    "naming the key, keep the existing defaults, and add tests for both paths. "
) * 3
_AGENT_LINES = (
    "agent uses Read {path}",
    "agent uses Edit {path}",
    "agent uses Bash pytest -q tests/test_settings.py",
    "agent tool result: 12 passed in 0.41s",
    "agent says: The loader now rejects unknown keys; adding a test for nested sections next.",
    "agent tool result: The file {path} has been updated. Here's the result of running `cat -n`",
)
_DIFF = "".join(
    f"--- a/src/pkg/mod{i}.py\n+++ b/src/pkg/mod{i}.py\n@@ -1,4 +1,6 @@\n"
    f" import os\n-OLD = {i}\n+NEW = {i}\n+CHECK = True\n def f():\n     return OLD\n"
    for i in range(12)
)


class Recorder:
    """HTTP attempts (label -> [wall time, ms, status]) and everything else worth counting."""

    def __init__(self) -> None:
        self.samples: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    def http(self, label: str, began: float, ms: float, status: str) -> None:
        self.samples[label].append((round(began, 3), round(ms, 2), status))

    def error(self, what: str, exc: BaseException | None = None) -> None:
        detail = f"{what}: {type(exc).__name__}: {str(exc)[:160]}" if exc else what
        self.errors[detail] += 1


class TimedTransport(httpx.AsyncBaseTransport):
    """The default transport (with PrefectClient's connection limits), timing each attempt
    from sending the request to the last byte of the response."""

    def __init__(self, recorder: Recorder) -> None:
        self._rec = recorder
        self._inner = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=8,
                                keepalive_expiry=25)
        )  # fmt: skip

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        label = f"{request.method} {_UUID.sub('{id}', request.url.path.removeprefix('/api'))}"
        wall, began = time.time(), time.monotonic()
        try:
            response = await self._inner.handle_async_request(request)
            await response.aread()
        except httpx.TimeoutException:
            self._rec.http(label, wall, (time.monotonic() - began) * 1000, "timeout")
            raise
        except httpx.TransportError:
            self._rec.http(label, wall, (time.monotonic() - began) * 1000, "connection-error")
            raise
        self._rec.http(label, wall, (time.monotonic() - began) * 1000, str(response.status_code))
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class Agent:
    """One virtual agent running one task."""

    def __init__(self, cfg: dict[str, Any], rec: Recorder, worker_events: PrefectEventsClient,
                 rng: random.Random, step: int) -> None:  # fmt: skip
        self.cfg, self.rec, self.worker_events, self.rng, self.step = (
            cfg,
            rec,
            worker_events,
            rng,
            step,
        )
        ids = cfg["ids"]
        self.deployment_id, self.flow_id = UUID(ids["deployment"]), UUID(ids["flow"])
        self.last: dict[str, Event] = {}

    # -- events ------------------------------------------------------------------------------

    def _related(self, run: Any, tags: list[str]) -> list[dict[str, str]]:
        ids = self.cfg["ids"]
        rel = [
            {"prefect.resource.id": f"prefect.flow-run.{run.id}",
             "prefect.resource.role": "flow-run", "prefect.resource.name": run.name},
            {"prefect.resource.id": f"prefect.flow.{ids['flow']}",
             "prefect.resource.role": "flow", "prefect.resource.name": "conductor-task"},
            {"prefect.resource.id": f"prefect.deployment.{ids['deployment']}",
             "prefect.resource.role": "deployment", "prefect.resource.name": "run"},
            {"prefect.resource.id": f"prefect.work-queue.{ids['queue']}",
             "prefect.resource.role": "work-queue", "prefect.resource.name": ids["queue_name"]},
            {"prefect.resource.id": f"prefect.work-pool.{ids['pool']}",
             "prefect.resource.role": "work-pool", "prefect.resource.name": ids["pool_name"]},
        ]  # fmt: skip
        rel += [{"prefect.resource.id": f"prefect.tag.{t}", "prefect.resource.role": "tag"}
                for t in tags]  # fmt: skip
        return rel

    def _task_event(self, run: Any, tags: list[str], tr: dict[str, Any], to: str) -> Event:
        now = datetime.now(UTC)
        kinds = {"Pending": "PENDING", "Running": "RUNNING", "Completed": "COMPLETED"}
        before = {"Running": "Pending", "Completed": "Running"}.get(to)
        if to == "Running":
            tr["start_time"] = now.isoformat()
        if to == "Completed":
            tr["end_time"] = now.isoformat()
        state = lambda name: {"type": kinds[name], "name": name, "message": "",  # noqa: E731
                              "state_details": {}}  # fmt: skip
        previous = self.last.get(tr["id"])
        event = Event(
            occurred=now,
            event=f"prefect.task-run.{to}",
            resource={
                "prefect.resource.id": f"prefect.task-run.{tr['id']}",
                "prefect.resource.name": tr["name"], "prefect.run-count": "1",
                "prefect.state-message": "", "prefect.state-name": to,
                "prefect.state-timestamp": now.isoformat(), "prefect.state-type": kinds[to],
                "prefect.orchestration": "client",
            },
            related=self._related(run, tags),
            payload={
                "intended": {"from": kinds[before] if before else None, "to": kinds[to]},
                "initial_state": state(before) if before else None,
                "validated_state": {**state(to), "data": None},
                "task_run": {k: v for k, v in tr.items() if k != "id"},
            },
            id=uuid4(),
            follows=previous.id if previous else None,
        )  # fmt: skip
        self.last[tr["id"]] = event
        return event

    def _run_event(self, name: str, run: Any, tags: list[str], **payload: Any) -> Event:
        return Event(
            event=name,
            resource={"prefect.resource.id": f"prefect.flow-run.{run.id}",
                      "prefect.resource.name": run.name, "prefect.version": "3.8.8"},
            related=self._related(run, tags)[1:],
            payload=payload,
        )  # fmt: skip

    def _worker_event(self, name: str, run: Any, tags: list[str]) -> Event:
        return Event(
            event=name,
            resource={"prefect.resource.id": "prefect.worker.process.bench-worker",
                      "prefect.resource.name": "bench-worker", "prefect.version": "3.8.8",
                      "prefect.worker-type": "process"},
            related=self._related(run, tags),
        )  # fmt: skip

    async def _emit(self, client: PrefectEventsClient, event: Event) -> None:
        try:
            await client.emit(event)
            self.rec.counts["events_sent"] += 1
        except Exception as exc:
            self.rec.counts["events_failed"] += 1
            self.rec.error("event " + event.event, exc)

    # -- the task ----------------------------------------------------------------------------

    async def run(self, duration_seconds: float) -> None:
        cfg, _rng = self.cfg, self.rng
        spec = TaskSpec(kind="generic", title="Validate settings keys", prompt=_PROMPT,
                        repo="https://git.example.com/team/service.git", timeout_seconds=3600,
                        tags=[f"bench-step:{self.step}"])  # fmt: skip
        transport = TimedTransport(self.rec)
        async with PrefectClient(cfg["api_url"], auth_string=cfg["auth_string"],
                                 httpx_settings={"transport": transport}) as client:  # fmt: skip
            run = await submit_task(client, spec)
            tags = list(run.tags)
            self.rec.counts["tasks_submitted"] += 1
            await asyncio.sleep(cfg["dispatch_seconds"])
            await self._worker_side(client, run, tags)
            await asyncio.sleep(cfg["process_start_seconds"])
            async with PrefectEventsClient(cfg["api_url"]) as events:
                await self._flow_run(client, events, run, tags, spec, duration_seconds)
            await self._emit(self.worker_events,
                             self._worker_event("prefect.worker.executed-flow-run", run, tags))  # fmt: skip

    async def _accept(self, result: Any, what: str) -> None:
        if str(getattr(result.status, "value", result.status)).upper() != "ACCEPT":
            self.rec.counts["states_not_accepted"] += 1
            self.rec.error(f"{what} answered {result.status}")

    async def _worker_side(self, client: PrefectClient, run: Any, tags: list[str]) -> None:
        ids = self.cfg["ids"]
        await client.read_deployment(self.deployment_id)
        await self._accept(await client.set_flow_run_state(run.id, Pending()), "Pending")
        await client.read_deployment(self.deployment_id)
        await client.read_flow(self.flow_id)
        await self._emit(self.worker_events,
                         self._worker_event("prefect.worker.submitted-flow-run", run, tags))  # fmt: skip
        await client.update_flow_run_labels(run.id, {
            "prefect.worker.name": "bench-worker", "prefect.worker.type": "process",
            "prefect.work-pool.name": ids["pool_name"], "prefect.work-pool.id": ids["pool"]})  # fmt: skip
        await self._accept(
            await client.set_flow_run_state(run.id, Pending(name="Submitting")), "Submitting"
        )
        await client.update_flow_run(run.id, infrastructure_pid=str(self.rng.randint(1000, 99999)))
        await client.create_logs([
            self._log(run, None, "prefect.flow_runs.worker", f"Worker 'bench-worker' submitting flow run '{run.id}'"),
            self._log(run, None, "prefect.flow_runs.worker", f"Flow run '{run.name}' submitted to infrastructure"),
        ])  # fmt: skip

    def _log(self, run: Any, task_run: str | None, name: str, message: str) -> LogCreate:
        return LogCreate(name=name, level=20, message=message, timestamp=datetime.now(UTC),
                         flow_run_id=run.id, task_run_id=UUID(task_run) if task_run else None)  # fmt: skip

    def _new_task_run(self, run: Any, name: str) -> dict[str, Any]:
        key = str(uuid4())
        return {
            "id": str(uuid4()), "name": f"{name}-{key[:3]}",
            "task_key": f"{name.replace('-', '_')}-3a201dd3", "dynamic_key": key,
            "empirical_policy": {"max_retries": 0, "retry_delay_seconds": 0.0, "retries": 0,
                                 "retry_delay": 0},
            "tags": [], "labels": {}, "task_inputs": {"spec": []}, "run_count": 1,
            "flow_run_run_count": 1, "expected_start_time": datetime.now(UTC).isoformat(),
            "total_run_time": 0.0,
        }  # fmt: skip

    async def _flow_run(self, client: PrefectClient, events: PrefectEventsClient, run: Any,
                        tags: list[str], spec: TaskSpec, duration_seconds: float) -> None:  # fmt: skip
        cfg, ids = self.cfg, self.cfg["ids"]
        began = datetime.now(UTC)
        await client.read_flow_run(run.id)
        await client.read_deployment(self.deployment_id)
        await client.api_version()
        await self._emit(events, self._run_event("prefect.flow-run.pull-step.executed", run, tags))
        await client.create_logs([self._log(run, None, "prefect.flow_runs", m) for m in (
            "Running 1 deployment pull step(s)", "Executing deployment step: set_working_directory",
            "Deployment step 'set_working_directory' completed successfully",
            "All deployment steps completed successfully")])  # fmt: skip
        await client.read_flow_run(run.id)
        await client.api_version()
        await client.update_flow_run(run.id, flow_version="ca19d4f9365c8dd774ef54bd4fc0c4a9",
                                     empirical_policy=FlowRunPolicy())  # fmt: skip
        await client.api_version()
        await client.read_flow_run(run.id)
        await self._accept(await client.set_flow_run_state(run.id, Running()), "Running")
        await client.read_flow_run(run.id)
        await client.request("GET", "/admin/storage")  # type: ignore[arg-type]
        await client.read_flow(self.flow_id)
        await client.read_work_queue(UUID(ids["queue"]))
        await client.read_work_pool(ids["pool_name"])
        await client.read_deployment(self.deployment_id)

        pending: list[LogCreate] = [self._log(run, None, "prefect.flow_runs",
                                              f"Beginning flow run '{run.name}' for flow 'conductor-task'")]  # fmt: skip
        stop = asyncio.Event()

        async def heartbeats() -> None:
            while not stop.is_set():
                await self._emit(events, self._run_event("prefect.flow-run.heartbeat", run, tags))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), cfg["heartbeat_seconds"])

        async def flush_logs() -> None:
            while True:
                done = stop.is_set()
                if pending:
                    batch = pending[:]
                    pending.clear()
                    try:
                        await client.create_logs(batch)
                    except Exception as exc:
                        self.rec.error("logs", exc)
                if done:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), cfg["log_batch_seconds"])

        background = [asyncio.create_task(heartbeats()), asyncio.create_task(flush_logs())]
        try:
            await self._task_runs(run, tags, events, pending, duration_seconds)
            data = self._result(run, spec, began)
            await self._artifacts(client, events, run, tags, data)
            await self._accept(
                await client.set_flow_run_state(run.id, Completed(message="succeeded")), "Completed"
            )
            pending.append(self._log(run, None, "prefect.flow_runs",
                                     "Finished in state Completed('succeeded')"))  # fmt: skip
        finally:
            stop.set()
            await asyncio.gather(*background, return_exceptions=True)

    async def _task_runs(self, run: Any, tags: list[str], events: PrefectEventsClient,
                         pending: list[LogCreate], duration_seconds: float) -> None:  # fmt: skip
        rate = self.cfg["log_lines_per_minute"] / 60.0
        short = min(0.5, duration_seconds / 8)
        for name in _TASKS:
            tr = self._new_task_run(run, name)
            for to in ("Pending", "Running"):
                await self._emit(events, self._task_event(run, tags, tr, to))
            if name == "run-agent":
                pending.append(self._log(run, tr["id"], "prefect.task_runs",
                                         "agent agent started (model claude-sonnet-4-5, mode acceptEdits)"))  # fmt: skip
                end = time.monotonic() + max(0.0, duration_seconds - 3 * short)
                while (left := end - time.monotonic()) > 0:
                    await asyncio.sleep(min(left, self.rng.expovariate(rate) if rate else left))
                    if time.monotonic() < end:
                        line = self.rng.choice(_AGENT_LINES).format(path="src/pkg/settings.py")
                        pending.append(self._log(run, tr["id"], "prefect.task_runs", line))
                pending.append(self._log(run, tr["id"], "prefect.task_runs",
                                         "agent finished: success, 14 turns, $0.4210"))  # fmt: skip
            else:
                await asyncio.sleep(short)
            await self._emit(events, self._task_event(run, tags, tr, "Completed"))
            pending.append(self._log(run, tr["id"], "prefect.task_runs",
                                     "Finished in state Completed()"))  # fmt: skip

    def _result(self, run: Any, spec: TaskSpec, began: datetime) -> TaskResult:
        task_id = task_id_of(run)  # the run's name is "<id>: <title>", no artifact key
        return TaskResult(
            task_id=task_id, kind=spec.kind, title=spec.title, status=TaskStatus.SUCCEEDED,
            summary="The settings loader now rejects unknown keys; 4 tests added.",
            repo=spec.repo, branch=f"conductor/{task_id}", base_commit="a" * 40,
            head_commit="b" * 40, files_changed=[f"src/pkg/mod{i}.py" for i in range(12)],
            cost_usd=0.421, input_tokens=182_000, output_tokens=6_400, num_turns=14,
            session_id=str(uuid4()), model="claude-sonnet-4-5",
            duration_seconds=round((datetime.now(UTC) - began).total_seconds(), 3),
            started_at=began, finished_at=datetime.now(UTC),
        )  # fmt: skip

    async def _artifacts(self, client: PrefectClient, events: PrefectEventsClient, run: Any,
                         tags: list[str], result: TaskResult) -> None:  # fmt: skip
        for create in (
            ArtifactCreate(key=report_key(result.task_id), type="markdown",
                           data=task_markdown(result, _DIFF), flow_run_id=run.id,
                           description=f"Conductor task {result.task_id}: succeeded"),
            ArtifactCreate(key=result_key(result.task_id), type=RESULT_ARTIFACT_TYPE,
                           data=result.model_dump(mode="json"), flow_run_id=run.id,
                           description=f"Conductor result of {result.task_id}"),
        ):  # fmt: skip
            artifact = await client.create_artifact(create)
            await self._emit(events, Event(
                event="prefect.artifact.created",
                resource={"prefect.resource.id": f"prefect.artifact.{artifact.id}",
                          "prefect.resource.name": create.key or ""},
                related=self._related(run, tags),
                payload={"key": create.key, "type": create.type, "description": create.description},
            ))  # fmt: skip


async def _slot(cfg: dict[str, Any], index: int, rec: Recorder, worker_events: PrefectEventsClient,
                durations: list[float]) -> None:  # fmt: skip
    rng = random.Random(cfg["seed"] * 100_003 + index)
    start = cfg["start_wall"] + cfg["stagger_seconds"] * index / max(1, cfg["total_agents"])
    await asyncio.sleep(max(0.0, start - time.time()))
    while time.time() < cfg["stop_starting_wall"]:
        duration = rng.uniform(cfg["task_min_seconds"], cfg["task_max_seconds"])
        began = time.monotonic()
        rec.counts["tasks_started"] += 1
        try:
            await Agent(cfg, rec, worker_events, rng, cfg["step"]).run(duration)
        except asyncio.CancelledError:
            rec.counts["tasks_unfinished"] += 1
            raise
        except Exception as exc:
            rec.counts["tasks_failed"] += 1
            rec.error("task", exc)
            # Nobody resubmits a failed task at once: the slot waits a task's time, so an
            # overloaded API is not also hammered by a retry storm of new submissions.
            await asyncio.sleep(max(0.0, duration - (time.monotonic() - began)))
        else:
            rec.counts["tasks_completed"] += 1
            durations.append(round(time.monotonic() - began, 2))


async def _loop_lag(lags: list[float], interval_seconds: float = 0.1) -> None:
    """How late this process's event loop wakes up: the client-side share of every latency."""
    while True:
        began = time.monotonic()
        await asyncio.sleep(interval_seconds)
        lags.append(round((time.monotonic() - began - interval_seconds) * 1000, 1))


async def generate(cfg: dict[str, Any]) -> dict[str, Any]:
    rec = Recorder()
    durations: list[float] = []
    lags: list[float] = []
    cpu0 = time.process_time()
    await asyncio.sleep(max(0.0, cfg["start_wall"] - time.time()))
    lag = asyncio.create_task(_loop_lag(lags))
    async with PrefectEventsClient(cfg["api_url"]) as worker_events:
        slots = [asyncio.create_task(_slot(cfg, i * cfg["generators"] + cfg["generator"], rec,
                                           worker_events, durations))
                 for i in range(cfg["agents"])]  # fmt: skip
        _, late = await asyncio.wait(slots, timeout=max(1.0, cfg["hard_stop_wall"] - time.time()))
        for task in late:
            task.cancel()
        await asyncio.gather(*slots, return_exceptions=True)
    lag.cancel()
    return {
        "generator": cfg["generator"],
        "agents": cfg["agents"],
        "samples": rec.samples,
        "counts": dict(rec.counts),
        "errors": dict(rec.errors.most_common(30)),
        "task_wall_seconds": durations,
        "cpu_seconds": round(time.process_time() - cpu0, 2),
        "loop_lag_ms": lags,
    }


def main() -> None:
    print("ready", flush=True)
    cfg = json.loads(sys.stdin.readline())
    out = asyncio.run(generate(cfg))
    Path(sys.argv[1]).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
