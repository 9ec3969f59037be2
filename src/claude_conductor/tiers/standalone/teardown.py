"""Stopping a standalone stack so that nothing is left running: flow runs and their agents
first (so they report that `conductor down` stopped them, and clean up), then the workers, the
other daemons, the server, and last anything that still carries the stack's marker variable.

Flow runs are found two ways: the engines the worker's forkserver recorded
(``work_pools.forking.run_records_dir``) with everything they started (the process tree), and
the processes whose environment carries the stack's marker. The first is what finds forked
engines when ``down`` does not run as root: they are non-dumpable (they hold the API
credential), so their environment cannot be read, not even by their own user."""

from __future__ import annotations

import json
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import WorkPoolUpdate
from prefect.client.schemas.filters import (
    WorkPoolFilter,
    WorkPoolFilterName,
)
from prefect.states import Crashed

from claude_conductor.client.connection import conductor_client, run_sync
from claude_conductor.flows import stopping
from claude_conductor.settings import ConductorSettings
from claude_conductor.system import processes
from claude_conductor.tiers.standalone import launch
from claude_conductor.tiers.status import DaemonStatus
from claude_conductor.work_pools.forking import run_records_dir
from claude_conductor.work_pools.pools import busy_filter

__all__ = [
    "DOWN_KILLED_MESSAGE",
    "INTERRUPTED_MESSAGE",
    "crash_interrupted_runs",
    "crash_leftover_runs",
    "flow_run_processes",
    "stop_stack",
    "take_clean_stop",
]

logger = logging.getLogger(__name__)


async def _pause_pools(settings: ConductorSettings, paused: bool) -> None:
    async with conductor_client(settings, api_url=launch.local_api_url(settings)) as client:
        for pool in (settings.worker.pool, settings.worker.coordinator_pool):
            try:
                await client.update_work_pool(pool, WorkPoolUpdate(is_paused=paused))
            except Exception as exc:
                logger.warning("could not pause work pool %s: %s", pool, exc)


DOWN_KILLED_MESSAGE = (
    "stopped by `conductor down`: the run did not end within the grace period and its "
    "process was killed; run it again with `conductor tasks retry`"
)

INTERRUPTED_MESSAGE = (
    "interrupted: the stack stopped without `conductor down` while this run was in flight "
    "(found by the next `conductor up`); run it again with `conductor tasks retry`"
)


async def crash_leftover_runs(
    settings: ConductorSettings,
    client: PrefectClient,
    message: str = DOWN_KILLED_MESSAGE,
) -> int:
    """Mark the stack's pending, running and cancelling flow runs Crashed; returns how many."""
    runs = await client.read_flow_runs(
        flow_run_filter=busy_filter(),
        work_pool_filter=WorkPoolFilter(
            name=WorkPoolFilterName(any_=[settings.worker.pool, settings.worker.coordinator_pool])
        ),
    )
    for run in runs:
        await client.set_flow_run_state(run.id, Crashed(message=message), force=True)
    return len(runs)


async def _mark_crashed(settings: ConductorSettings) -> None:
    async with conductor_client(settings, api_url=launch.local_api_url(settings)) as client:
        count = await crash_leftover_runs(settings, client)
        if count:
            logger.info("marked %d interrupted flow runs Crashed", count)


def flow_run_processes(settings: ConductorSettings) -> list[tuple[int, int | None]]:
    """Flow-run processes of this stack outside the daemons' own process groups: the engines
    the forkserver recorded and the processes found by the stack's marker."""
    daemon_groups = {
        d.pid
        for name in processes.pid_file_names(settings)
        if (d := processes.read_daemon(settings, name)) is not None
    }
    engines = [r.pid for r in processes.recorded_processes(run_records_dir(settings))]
    marked = processes.find_processes_with_env(launch.STACK_MARKER, str(settings.home))
    found: list[tuple[int, int | None]] = []
    for pid in sorted({*engines, *marked}):
        if processes.process_group(pid) in (None, *daemon_groups):
            continue
        found.append((pid, processes.process_start_ticks(pid)))
    return found


def _stop_flow_runs(settings: ConductorSettings, grace_seconds: float) -> list[int]:
    """SIGTERM the flow runs (each stops its agents and reports), KILL after the grace
    period; then stop whatever they started that outlived them. Returns the runs' PIDs."""
    runs = flow_run_processes(settings)
    started = [
        (pid, processes.process_start_ticks(pid))
        for run, _ in runs
        for pid in processes.descendants(run)
    ]
    stopped = processes.terminate_processes(runs, grace_seconds)
    left = processes.terminate_processes(started, min(grace_seconds, 5.0))
    if left:
        logger.warning("stopped %d processes the flow runs left behind: %s", len(left), left)
    return stopped


def crash_interrupted_runs(settings: ConductorSettings) -> int:
    """At ``up``, when no worker and no flow-run process of this stack is alive: runs the
    database still shows in flight were cut off by an unclean stop (a crash, a kill, a reboot).
    No process will ever report on them, so they are marked Crashed now instead of staying
    Running forever. Returns how many."""

    async def go() -> int:
        async with conductor_client(settings, api_url=launch.local_api_url(settings)) as client:
            return await crash_leftover_runs(settings, client, INTERRUPTED_MESSAGE)

    count = run_sync(go())
    if count:
        logger.warning("marked %d runs interrupted by an unclean stop Crashed", count)
    return count


def stop_stack(settings: ConductorSettings, grace_seconds: float = 10.0) -> list[DaemonStatus]:
    """Stop everything of the stack: new runs are held (pools paused), running flow runs get
    SIGTERM (they stop their agents, keep the work so far and end Cancelled with
    ``stopping.STOPPED_BY_DOWN``; one that does not end in time is killed and marked Crashed
    with ``DOWN_KILLED_MESSAGE``), then the workers, any other daemon
    (the dashboard), the server; anything still carrying the stack's marker is killed last.
    Returns what was stopped. Scheduled runs and all history stay in the database."""
    stopped: list[DaemonStatus] = []
    api_up = processes.is_running(settings, launch.SERVER) and processes.http_ok(
        launch.health_url(launch.local_api_url(settings))
    )
    if api_up:
        _best_effort("hold new runs (pause the pools)", _pause_pools(settings, paused=True))
    # The runs stopped now end Cancelled saying `conductor down` stopped them (not the user).
    stopping.mark_stopping(settings)
    try:
        for pid in _stop_flow_runs(settings, grace_seconds):
            stopped.append(DaemonStatus(name="flow-run", pid=pid, running=False))
    finally:
        stopping.clear_stopping(settings)
    names = processes.pid_file_names(settings)
    workers = [n for n in names if n == launch.WORKER or n.startswith("worker-")]
    others = [n for n in names if n not in workers and n != launch.SERVER]
    for name in workers:
        _stop(settings, name, grace_seconds, stopped)
    clean = api_up and _best_effort("mark interrupted runs Crashed", _mark_crashed(settings))
    for name in others:
        _stop(settings, name, grace_seconds, stopped)
    _stop(settings, launch.SERVER, grace_seconds, stopped)
    strays = processes.find_processes_with_env(launch.STACK_MARKER, str(settings.home))
    stray_targets = [(pid, processes.process_start_ticks(pid)) for pid in strays]
    for pid in processes.terminate_processes(stray_targets, grace_seconds):
        stopped.append(DaemonStatus(name="stray", pid=pid, running=False))
    if clean and not processes.is_running(settings, launch.SERVER):
        _mark_clean_stop(settings)
    return stopped


def _best_effort(what: str, coro: Coroutine[Any, Any, None]) -> bool:
    """Run an API step of ``down``; a failure is logged, never stops the teardown."""
    try:
        run_sync(coro)
    except Exception as exc:
        logger.warning("could not %s: %s", what, exc)
        return False
    return True


# -- a clean stop, as the next `up` sees it ----------------------------------------------

_CLEAN_STOP = "stopped-cleanly.json"


def _database(settings: ConductorSettings) -> Path:
    return launch.prefect_home(settings) / "prefect.db"


def _database_stamp(settings: ConductorSettings) -> list[int] | None:
    try:
        st = _database(settings).stat()
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size, st.st_ino]


def _mark_clean_stop(settings: ConductorSettings) -> None:
    """``down`` left no run in flight in the database it closed: record that database."""
    path = settings.run_dir / _CLEAN_STOP
    try:
        path.write_text(json.dumps({"database": _database_stamp(settings)}), encoding="utf-8")
    except OSError as exc:
        logger.warning("could not record the clean stop in %s: %s", path, exc)


def take_clean_stop(settings: ConductorSettings) -> bool:
    """At ``up``, before the server starts: True when no run can have been left in flight,
    because the last ``down`` stopped everything and marked what was in flight (and the
    database is still the one it closed, not a restored one), or because there is no
    database yet. The record is used once."""
    path = settings.run_dir / _CLEAN_STOP
    stamp = _database_stamp(settings)
    try:
        recorded = json.loads(path.read_text(encoding="utf-8")).get("database")
    except (OSError, ValueError, AttributeError):
        recorded = None
    path.unlink(missing_ok=True)
    return stamp is None or (recorded is not None and recorded == stamp)


def _stop(
    settings: ConductorSettings, name: str, grace_seconds: float, stopped: list[DaemonStatus]
) -> None:
    daemon = processes.stop_daemon(settings, name, grace_seconds)
    if daemon is not None:
        stopped.append(
            DaemonStatus(name=name, pid=daemon.pid, running=False, log_path=str(daemon.log_path))
        )
