"""Conductor's Prefect worker type, ``conductor``: Prefect's process worker, with flow runs
forked from a warm forkserver (``work_pools.forking``) instead of a fresh interpreter each,
woken by events instead of waiting for its next poll, and a leaner path per run.

Registered through the ``prefect.collections`` entry point, so both work::

    prefect worker start --type conductor --pool conductor-agents
    python -m claude_conductor.work_pools.serve --pool conductor-agents --pool ...  # several pools, one process

What is Prefect's and stays so: the run's state proposals (Pending, Running, final), the
cancellation observer (Cancelling -> the run's process group gets SIGTERM, then SIGKILL), crash
detection by exit code (``FlowRunExecutor``), logs and events sent by the run itself.

What is added:

- fast start: a run whose deployment has a module-path entrypoint and no pull step beyond a
  no-op ``set_working_directory: .`` is forked (job variable ``fast_start``, default true);
  anything else, or a forkserver that cannot be had, takes Prefect's own starter;
- wake-up on events: a run scheduled into the pool, a run of the pool ending, the pool
  unpaused or given more slots triggers a poll at once; the regular poll
  (``PREFECT_WORKER_QUERY_SECONDS``) is only the fallback;
- a crashed run (its process killed) is re-run when its task spec asks for ``retries``;
- a worker that died (SIGKILL, OOM) loses nothing: its forked runs go on and report their own
  final state; the next worker on the host adopts the live ones (cancelling them works again)
  and marks those whose process is gone Crashed (or re-runs them per ``retries``), so nothing
  stays Running forever and nothing runs twice.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

import anyio
import anyio.abc
from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName
from prefect.client.schemas.objects import WorkQueue
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventAnyResourceFilter, EventFilter, EventNameFilter
from prefect.exceptions import Abort, ObjectNotFound
from prefect.flows import load_flow_from_flow_run
from prefect.runner._flow_run_executor import FlowRunExecutionResult, FlowRunExecutorContext
from prefect.runner._hook_runner import HookRunner
from prefect.runner._process_manager import ProcessHandle
from prefect.states import AwaitingRetry, Crashed, Pending
from prefect.utilities.engine import propose_state
from prefect.workers.base import BaseWorker
from prefect.workers.process import (
    ProcessJobConfiguration,
    ProcessVariables,
    ProcessWorker,
    ProcessWorkerResult,
)
from pydantic import Field

from claude_conductor.settings import load_settings
from claude_conductor.system import processes
from claude_conductor.system.hardening import make_undumpable
from claude_conductor.work_pools import forking
from claude_conductor.work_pools.pools import busy_filter
from claude_conductor.work_pools.related import related_objects

if TYPE_CHECKING:
    from prefect.client.schemas.objects import Flow as APIFlow
    from prefect.client.schemas.objects import FlowRun, State
    from prefect.client.schemas.responses import DeploymentResponse

__all__ = [
    "WORKER_TYPE",
    "ConductorJobConfiguration",
    "ConductorVariables",
    "ConductorWorker",
    "fast_entrypoint",
    "retries_left",
]

WORKER_TYPE = "conductor"
_CACHE_SECONDS = 5.0
_NOOP_PULL_STEP = "prefect.deployments.steps.set_working_directory"
_WAKE_EVENTS = [
    "prefect.flow-run.Scheduled",
    "prefect.flow-run.Completed",
    "prefect.flow-run.Failed",
    "prefect.flow-run.Crashed",
    "prefect.flow-run.Cancelled",
    "prefect.work-pool.ready",  # unpaused (or back online)
    "prefect.work-pool.updated",  # e.g. more slots
]


class ConductorJobConfiguration(ProcessJobConfiguration):
    fast_start: bool = Field(default=True)

    @classmethod
    def _base_environment(cls) -> dict[str, str]:
        # Prefect's: the worker's settings as variables, rebuilt for every run (~20 ms).
        return forking.settings_environment()


class ConductorVariables(ProcessVariables):
    fast_start: bool = Field(
        default=True,
        title="Fast start",
        description="Fork the flow run from the worker's warm forkserver (Prefect and the "
        "flows imported once) when its deployment allows it: a module-path entrypoint and no "
        "pull step. False: a fresh `python -m prefect.engine` per run, as Prefect's process "
        "worker does.",
    )


def fast_entrypoint(deployment: DeploymentResponse | None) -> str | None:
    """The entrypoint a run of ``deployment`` can be forked with, or None when it needs
    Prefect's own starter (no deployment, a file entrypoint, real pull steps)."""
    if deployment is None or not deployment.entrypoint:
        return None
    entrypoint = deployment.entrypoint
    if ":" in entrypoint or "/" in entrypoint or entrypoint.endswith(".py"):
        return None
    for step in deployment.pull_steps or []:
        (name, args), *rest = step.items()
        if rest or name != _NOOP_PULL_STEP or (args or {}).get("directory") not in (".", None):
            return None
    return entrypoint


def retries_left(flow_run: FlowRun) -> tuple[int, int]:
    """(retries allowed, retries used) of a run: the larger of the task spec's ``retries``
    (Conductor flows) and the flow's own."""
    spec = (flow_run.parameters or {}).get("spec")
    spec_retries = spec.get("retries", 0) if isinstance(spec, dict) else 0
    allowed = max(
        int(spec_retries or 0) if not isinstance(spec_retries, bool) else 0,
        int(flow_run.empirical_policy.retries or 0),
    )
    return allowed, max(0, (flow_run.run_count or 1) - 1)


class _GroupScope:
    """Signals a forked engine's whole process group (it leads its own session)."""

    wait_after_graceful_kill = True

    def is_alive(self, pid: int) -> bool:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def graceful_kill(self, pid: int) -> None:
        os.killpg(pid, 15)

    def hard_kill(self, pid: int) -> None:
        os.killpg(pid, 9)

    def close(self) -> None:
        pass


def _local_pid(infrastructure_pid: str | None, host: str) -> int | None:
    if not infrastructure_pid or ":" not in infrastructure_pid:
        return None
    where, _, pid = infrastructure_pid.rpartition(":")
    return int(pid) if where == host and pid.isdigit() else None


def _alive_since(pid: int, since: float | None) -> bool:
    """``pid`` runs and was started no later than ``since`` (epoch seconds): not a reused pid."""
    if not processes.is_live(pid):
        return False
    if since is None:
        return True
    ticks = processes.process_start_ticks(pid)
    if ticks is None:
        return False
    with open("/proc/stat", "rb") as fh:
        boot = next(int(line.split()[1]) for line in fh if line.startswith(b"btime"))
    return boot + ticks / os.sysconf("SC_CLK_TCK") <= since + 2


T = TypeVar("T")


async def _cached(
    store: dict[UUID, tuple[float, T]], key: UUID, read: Callable[[], Awaitable[T]]
) -> T:
    """``store[key]`` if read less than ``_CACHE_SECONDS`` ago, else ``read()`` (kept)."""
    now = time.monotonic()
    cached = store.get(key)
    if cached is not None and now - cached[0] < _CACHE_SECONDS:
        return cached[1]
    value = await read()
    store[key] = (now, value)
    return value


class ConductorWorker(ProcessWorker):
    """Prefect's process worker with warm fork starts, event wake-ups and crash recovery."""

    type = WORKER_TYPE
    job_configuration = ConductorJobConfiguration
    job_configuration_variables = ConductorVariables  # type: ignore[assignment]
    _description = (
        "Claude Conductor's worker: flow runs forked from a warm forkserver on this machine "
        "(Prefect and the flows imported once), woken by events; Prefect's process worker "
        "semantics otherwise."
    )
    _display_name = "Conductor"
    _documentation_url = "https://github.com/anthropics/claude-conductor"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._host = socket.gethostname()
        self._wake = anyio.Event()
        self._own_runs: set[UUID] = set()  # runs of this worker not ended yet
        self._deployments: dict[UUID, tuple[float, DeploymentResponse]] = {}
        self._flows: dict[UUID, APIFlow] = {}
        self._queues: dict[UUID, tuple[float, WorkQueue | None]] = {}
        self._forkserver: forking.Forkserver | None = None
        self._executor_ctx: FlowRunExecutorContext | None = None
        self._hook_runner = HookRunner(resolve_flow=load_flow_from_flow_run)

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> ConductorWorker:
        make_undumpable()  # the worker holds the API credential; its agents run as this user
        await BaseWorker.__aenter__(self)  # not ProcessWorker's: no ad hoc Runner
        stack = self._exit_stack
        settings = load_settings()
        preload = (*forking.DEFAULT_PRELOAD, *settings.worker.preload)
        self._forkserver = await stack.enter_async_context(
            forking.shared_forkserver(preload, forking.run_records_dir(settings))
        )
        self._executor_ctx = await stack.enter_async_context(FlowRunExecutorContext())
        assert self._runs_task_group is not None
        self._runs_task_group.start_soon(self._wake_on_events)
        self._runs_task_group.start_soon(self._poll_when_woken)
        with contextlib.suppress(Exception):
            await self._recover_runs()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await BaseWorker.__aexit__(self, *exc_info)

    async def _submit_adhoc_run(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            "the conductor worker runs deployments only; submit ad hoc flows to a process pool"
        )

    # -- waking up ----------------------------------------------------------------------------

    async def _wake_on_events(self) -> None:
        """Poll as soon as a run is scheduled into the pool or one of its runs ends."""
        while self._work_pool is None:
            await anyio.sleep(0.2)
        event_filter = EventFilter(
            event=EventNameFilter(name=_WAKE_EVENTS),
            any_resource=EventAnyResourceFilter(id=[f"prefect.work-pool.{self._work_pool.id}"]),
        )
        while True:
            try:
                async with get_events_subscriber(filter=event_filter) as subscriber:
                    async for event in subscriber:
                        if not self._ends_own_run(event):  # their slot released wakes it
                            self._wake.set()
            except Exception as exc:
                self._logger.debug("event subscription ended (%s); resubscribing", exc)
            await anyio.sleep(2.0)

    def _ends_own_run(self, event: Any) -> bool:
        """A run of this worker ended: its slot, released as its process exits, wakes the
        worker then (a query now, while the slot is still held, would be wasted)."""
        if event.event == "prefect.flow-run.Scheduled" or not event.resource.id.startswith(
            "prefect.flow-run."
        ):
            return False
        try:
            return UUID(event.resource.id.removeprefix("prefect.flow-run.")) in self._own_runs
        except ValueError:
            return False

    async def _poll_when_woken(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            if not self._has_successfully_synced or self._slots_full():
                continue  # every slot busy: the next one released wakes this again
            try:
                await self.get_and_submit_flow_runs()
            except Exception as exc:
                self._logger.warning("poll after an event failed: %s", exc)

    def _slots_full(self) -> bool:
        """No slot free: a query for scheduled runs now could submit none of them."""
        return self._limiter is not None and self._limiter.available_tokens < 1

    # -- submitting (leaner than BaseWorker's: cached reads, no per-run chatter) ----------------

    async def _deployment(self, deployment_id: UUID) -> DeploymentResponse:
        return await _cached(
            self._deployments, deployment_id, lambda: self.client.read_deployment(deployment_id)
        )

    async def _work_queue(self, work_queue_id: UUID | None) -> WorkQueue | None:
        """The run's work queue (cached like deployments), for its events; None if unread."""
        if work_queue_id is None:
            return None

        async def read() -> WorkQueue | None:
            with contextlib.suppress(Exception):
                return await self.client.read_work_queue(work_queue_id)
            return None

        return await _cached(self._queues, work_queue_id, read)

    async def _configuration(
        self, flow_run: FlowRun
    ) -> tuple[ConductorJobConfiguration, DeploymentResponse | None]:
        deployment = (
            await self._deployment(flow_run.deployment_id) if flow_run.deployment_id else None
        )
        flow = self._flows.get(flow_run.flow_id)
        if flow is None:
            flow = self._flows[flow_run.flow_id] = await self.client.read_flow(flow_run.flow_id)
        variables = dict(getattr(deployment, "job_variables", None) or {})
        run_variables = dict(flow_run.job_variables or {})
        if isinstance(variables.get("env"), dict):
            variables["env"] = {**variables["env"], **run_variables.pop("env", {})}
        variables.update(run_variables)
        configuration: ConductorJobConfiguration = (
            await ConductorJobConfiguration.from_template_and_values(
                base_job_template=self.work_pool.base_job_template,
                values=variables,
                client=self.client,
            )
        )
        configuration.prepare_for_flow_run(
            flow_run=flow_run,
            deployment=deployment,
            flow=flow,
            work_pool=self.work_pool,
            worker_name=self.name,
            worker_id=self.backend_id,
        )
        return configuration, deployment

    async def _submit_run(self, flow_run: FlowRun) -> None:
        try:
            pending = await self._propose_pending(flow_run)
            if pending is not None:
                # The run as the server now has it (the engine starts from this copy).
                flow_run = flow_run.model_copy(
                    update={
                        "state": pending,
                        "state_id": pending.id,
                        "state_name": pending.name,
                        "state_type": pending.type,
                    }
                )
                assert self._runs_task_group is not None
                pid = await self._runs_task_group.start(
                    self._submit_run_and_capture_errors, flow_run
                )
                if isinstance(pid, int):
                    try:
                        await self.client.update_flow_run(
                            flow_run_id=flow_run.id, infrastructure_pid=f"{self._host}:{pid}"
                        )
                    except Exception:
                        self.get_flow_run_logger(flow_run).exception(
                            "could not record the flow run's process id; it cannot be cancelled"
                        )
            else:
                self._release_limit_slot(flow_run.id)
        finally:
            self._submitting_flow_run_ids.discard(flow_run.id)
            if self._cancelling_observer is not None:
                self._cancelling_observer.remove_in_flight_flow_run_id(flow_run.id)

    async def _propose_pending(self, flow_run: FlowRun) -> State | None:
        """Pending, naming this worker (so a successor can tell the run was ours); the
        accepted state, None when the run is not ours to start."""
        try:
            state = await propose_state(
                self.client,
                Pending(message=f"taken by worker {self.name!r} on {self._host}"),
                flow_run_id=flow_run.id,
            )
        except Abort:
            return None
        except Exception:
            self._logger.exception("could not set flow run %s Pending", flow_run.id)
            return None
        return state if state.is_pending() else None

    async def _submit_run_and_capture_errors(
        self,
        flow_run: FlowRun,
        task_status: anyio.abc.TaskStatus[int | Exception] | None = None,
    ) -> ProcessWorkerResult | Exception:
        self._own_runs.add(flow_run.id)
        try:
            configuration, deployment = await self._configuration(flow_run)
            submitted_event = self._emit_flow_run_submitted_event(configuration)
            result = await self._run(flow_run, configuration, deployment, task_status)
        except Exception as exc:
            if task_status is not None and not task_status._future.done():  # type: ignore[attr-defined]
                self.get_flow_run_logger(flow_run).exception(
                    f"Failed to submit flow run '{flow_run.name}' to infrastructure."
                )
                task_status.started(exc)
                await self._propose_crashed_state(
                    flow_run,
                    f"Failed to submit flow run to infrastructure: {type(exc).__name__}: {exc}",
                )
            return exc
        finally:
            self._own_runs.discard(flow_run.id)
            self._release_limit_slot(flow_run.id)
            self._wake.set()  # a slot is free: look for waiting runs now
        # The executor has already proposed Crashed for a non-zero exit (no second write).
        if submitted_event:
            self._emit_flow_run_executed_event(result, configuration, submitted_event)
        return result

    # -- running --------------------------------------------------------------------------------

    async def run(
        self,
        flow_run: FlowRun,
        configuration: ProcessJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
    ) -> ProcessWorkerResult:
        deployment = (
            await self._deployment(flow_run.deployment_id) if flow_run.deployment_id else None
        )
        return await self._run(flow_run, configuration, deployment, task_status)

    async def _run(
        self,
        flow_run: FlowRun,
        configuration: ProcessJobConfiguration,
        deployment: DeploymentResponse | None,
        task_status: anyio.abc.TaskStatus[Any] | None,
    ) -> ProcessWorkerResult:
        entrypoint = fast_entrypoint(deployment)
        fast = (
            entrypoint is not None
            and getattr(configuration, "fast_start", True)
            and not configuration._command_configured
            and self._forkserver is not None
            and self._executor_ctx is not None
            and await self._forkserver.ensure()
        )
        if not fast:
            return await ProcessWorker.run(self, flow_run, configuration, task_status)
        assert entrypoint is not None and self._forkserver is not None
        assert self._executor_ctx is not None
        status = task_status or anyio.TASK_STATUS_IGNORED
        with (
            _working_dir(configuration.working_dir) as cwd,
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore", DeprecationWarning)
            starter = forking.ForkStarter(
                self._forkserver,
                entrypoint=entrypoint,
                cwd=cwd,
                env={**self._server_known_env(), **configuration.env},
                stream_output=configuration.stream_output,
                control_channel=self._executor_ctx.control_channel,
                related=related_objects(
                    flow_run,
                    flow=self._flows.get(flow_run.flow_id),
                    deployment=deployment,
                    work_queue=await self._work_queue(flow_run.work_queue_id),
                    work_pool=self._work_pool,
                ),
            )
            executor = self._executor_ctx.create_executor(
                flow_run, starter, propose_submitting=False, hook_runner=self._hook_runner
            )
            execution: FlowRunExecutionResult | None = None

            async def execute(
                *, task_status: anyio.abc.TaskStatus[ProcessHandle] = anyio.TASK_STATUS_IGNORED
            ) -> None:
                nonlocal execution
                execution = await executor.submit(task_status=task_status)

            async with anyio.create_task_group() as group:
                handle = await group.start(execute)
                status.started(handle.pid)
        if execution is None or execution.status_code is None:
            raise RuntimeError("Failed to start flow run process.")
        if execution.status_code != 0:
            await self._rerun_if_allowed(flow_run.id, f"exit code {execution.status_code}")
        return ProcessWorkerResult(
            status_code=execution.status_code, identifier=str(execution.handle.pid)
        )

    def _server_known_env(self) -> dict[str, str]:
        """What this worker's client has learnt of the server, for its engines' clients:
        a server without CSRF protection answers the token request with "disabled", once
        per client, and every engine's two clients (flow, logs and events) would ask again
        (one request on the path of every start). An engine does what the worker's client
        does, so a server restarted with protection on is found by both the same way."""
        http = getattr(self.client, "_client", None)
        if getattr(http, "enable_csrf_support", True) is False:
            return {"PREFECT_CLIENT_CSRF_SUPPORT_ENABLED": "false"}
        return {}

    async def _rerun_if_allowed(self, flow_run_id: UUID, why: str) -> bool:
        """After a crash: schedule the run again when its retries allow it."""
        flow_run = await self.client.read_flow_run(flow_run_id)
        if flow_run.state is None or not flow_run.state.is_crashed():
            return False
        allowed, used = retries_left(flow_run)
        if used >= allowed:
            return False
        await self.client.set_flow_run_state(
            flow_run_id,
            AwaitingRetry(
                message=f"crashed ({why}): {flow_run.state.message or ''}".strip()
                + f"; running it again (retry {used + 1} of {allowed})"
            ),
            force=True,
        )
        self.get_flow_run_logger(flow_run).info(
            "flow run crashed (%s); retry %d of %d", why, used + 1, allowed
        )
        return True

    # -- after a worker crash --------------------------------------------------------------------

    async def _recover_runs(self) -> None:
        """Runs of this pool a previous worker on this host left in flight: adopt the live
        ones, end (or re-run) the ones whose process is gone."""
        runs = await self.client.read_flow_runs(
            flow_run_filter=busy_filter(),
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[self._work_pool_name])),
        )
        mine = f"taken by worker {self.name!r} on {self._host}"
        for run in runs:
            pid = _local_pid(run.infrastructure_pid, self._host)
            since = run.start_time.timestamp() if run.start_time else None
            if pid is not None and _alive_since(pid, since):
                assert self._runs_task_group is not None
                self._runs_task_group.start_soon(self._adopt, run, pid)
            elif pid is not None or (
                run.state is not None and run.state.is_pending() and run.state.message == mine
            ):
                await self._end_orphan(run, pid)

    async def _end_orphan(self, run: FlowRun, pid: int | None) -> None:
        where = f"process {pid} on {self._host}" if pid else f"worker {self.name!r}"
        message = (
            f"the worker running it died and its flow-run {where} is gone; "
            "run it again with `conductor tasks retry`"
        )
        await self.client.set_flow_run_state(run.id, Crashed(message=message), force=True)
        self.get_flow_run_logger(run).warning("marked Crashed: %s", message)
        await self._rerun_if_allowed(run.id, "its worker died")

    async def _adopt(self, run: FlowRun, pid: int) -> None:
        """Watch a live run a dead worker left: cancellable again; Crashed if its process
        ends without a final state."""
        assert self._executor_ctx is not None
        handle = ProcessHandle(forking.ForkedRun(pid), termination_scope=_GroupScope())  # type: ignore[arg-type]
        await self._executor_ctx.process_manager.add(run.id, handle)
        self._logger.info("adopted flow run %s (process %d) left by a previous worker", run.id, pid)
        try:
            while _alive_since(pid, None):
                await anyio.sleep(1.0)
        finally:
            await self._executor_ctx.process_manager.remove(run.id)
        with contextlib.suppress(ObjectNotFound):
            current = await self.client.read_flow_run(run.id)
            if current.state is not None and not current.state.is_final():
                await self._end_orphan(current, pid)


@contextlib.contextmanager
def _working_dir(configured: Path | None) -> Any:
    if configured:
        yield Path(configured)
        return
    with tempfile.TemporaryDirectory(suffix="prefect") as path:  # as the process worker
        yield Path(path).resolve()
