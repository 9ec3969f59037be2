"""The standalone tier: a Prefect server on SQLite under the Conductor home, the work pools, the
deployments, and two process workers (agent slots; fan-out parents), all on this machine.

``up`` starts what is missing and returns when everything is ready; ``down`` stops it all,
flow runs and agents included, and leaves nothing running; history stays in the database.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from claude_conductor import config_file
from claude_conductor.client.connection import conductor_client, run_sync
from claude_conductor.client.rest import api_reader
from claude_conductor.credentials import register_block_types
from claude_conductor.errors import ConductorError, InputError
from claude_conductor.settings import ConductorSettings
from claude_conductor.system import processes
from claude_conductor.tiers.standalone import addons, launch, teardown
from claude_conductor.tiers.standalone.info import status
from claude_conductor.tiers.status import (
    DaemonStatus,
    ScaleResult,
    StackInfo,
    read_pool_status,
)
from claude_conductor.work_pools.deployments import apply_deployments
from claude_conductor.work_pools.pools import (
    ensure_pools,
    pool_name,
    set_agent_slots,
)

__all__ = ["down", "scale_agents", "status", "up"]

logger = logging.getLogger(__name__)

_MAX_AGENTS = 64


# -- up ----------------------------------------------------------------------------------


def _check_agents(agents: int) -> None:
    if isinstance(agents, bool) or not isinstance(agents, int) or not 1 <= agents <= _MAX_AGENTS:
        raise InputError(
            f"agents must be a whole number from 1 to {_MAX_AGENTS}, got {agents!r} "
            "(a pool with no slots would never run a task; use `conductor down` to stop)",
            field="worker.agents",
            value=agents,
        )


def _check_tier(settings: ConductorSettings) -> None:
    own = launch.local_api_url(settings)
    if settings.server.api_url and settings.server.api_url.rstrip("/") != own:
        raise InputError(
            f"CONDUCTOR_API_URL is set to {settings.server.api_url!r}, but the standalone tier "
            f"runs its own server at {own}; unset it (or use that API's tier instead)",
            field="server.api_url",
            value=settings.server.api_url,
        )


def _port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _start_server(settings: ConductorSettings, env: Mapping[str, str]) -> processes.Daemon:
    host = "127.0.0.1" if settings.server.host == "0.0.0.0" else settings.server.host
    if _port_taken(host, settings.server.port):
        raise ConductorError(
            f"port {settings.server.port} on {host} is in use by a process Conductor did not "
            f"start (no live PID file in {settings.run_dir}); stop it, or choose another port "
            "with CONDUCTOR_SERVER__PORT"
        )
    launch.prefect_home(settings).mkdir(parents=True, exist_ok=True)
    return processes.start_daemon(
        settings,
        launch.SERVER,
        launch.server_argv(settings),
        env=launch.server_env(settings, env),
    )


def _wait_server(settings: ConductorSettings, timeout_seconds: float) -> None:
    daemon = processes.read_daemon(settings, launch.SERVER)
    url = launch.health_url(launch.local_api_url(settings))
    ok = processes.wait_for_health(
        url, timeout_seconds, alive=lambda: daemon is not None and daemon.alive
    )
    if not ok:
        log = daemon.log_path if daemon else settings.logs_dir / f"{launch.SERVER}.log"
        what = (
            f"did not become healthy at {url} within {timeout_seconds:.0f}s"
            if daemon is not None and daemon.alive
            else "exited while starting"
        )
        raise processes.DaemonError(
            f"the Prefect server {what}",
            name=launch.SERVER,
            log_tail=processes.log_tail(log),
        )


async def _prepare_and_wait(
    settings: ConductorSettings, workers: dict[str, processes.Daemon], timeout_seconds: float
) -> None:
    """Create or update the pools and register the deployments while new workers boot (they
    wait for their pools), then wait for the workers."""
    async with conductor_client(settings, api_url=launch.local_api_url(settings)) as client:
        await ensure_pools(client, settings)
        await apply_deployments(client, settings)
        await register_block_types(client)
    if workers:
        await _wait_workers(settings, workers, timeout_seconds)


async def _wait_workers(
    settings: ConductorSettings, daemons: dict[str, processes.Daemon], timeout_seconds: float
) -> None:
    """Until the worker has sent a heartbeat for each pool since it was started (it polls
    from then on)."""
    deadline = time.monotonic() + timeout_seconds
    pending = {
        (name, kind): daemon for name, daemon in daemons.items() for kind in launch.WORKER_POOLS
    }
    async with conductor_client(settings, api_url=launch.local_api_url(settings)) as client:
        while pending:
            for (name, kind), daemon in list(pending.items()):
                workers = await client.read_workers_for_work_pool(pool_name(settings, kind))
                wanted = launch.worker_name(settings, kind)
                if any(
                    w.name == wanted
                    and w.last_heartbeat_time is not None
                    and w.last_heartbeat_time >= daemon.started_at
                    for w in workers
                ):
                    del pending[(name, kind)]
                elif not daemon.alive:
                    raise processes.DaemonError(
                        f"worker {name} exited during startup",
                        name=name,
                        log_tail=processes.log_tail(daemon.log_path),
                    )
            if pending and time.monotonic() > deadline:
                (name, _kind), daemon = next(iter(pending.items()))
                raise processes.DaemonError(
                    f"worker {name} did not reach the server within {timeout_seconds:.0f}s",
                    name=name,
                    log_tail=processes.log_tail(daemon.log_path),
                )
            if pending:
                await asyncio.sleep(0.1)


def up(
    settings: ConductorSettings,
    agents: int | None = None,
    *,
    offline_model: bool = False,
    dashboard: bool | None = None,
    base_env: Mapping[str, str] | None = None,
    worker_extra_env: Mapping[str, str] | None = None,
    timeout_seconds: float = 120.0,
    on_step: Callable[[str], None] | None = None,
) -> StackInfo:
    """Bring the stack up; start only what is not already running, and return when all of it
    is ready. ``agents`` changes the number of agent slots (saved to ``<home>/config.yaml``).
    ``offline_model`` points the agents at a local scripted model (the offline demo);
    ``dashboard`` (default ``settings.dashboard.enabled``) starts the dashboard too.
    ``base_env`` (default this process's environment) is what every process inherits;
    ``worker_extra_env`` is added for the workers (and so for every flow run and agent).
    ``on_step`` is told each step as it begins (for a progress line).
    Processes started by a call that then fails are stopped again."""
    _check_tier(settings)
    if agents is not None:
        _check_agents(agents)
    with processes.locked(settings):
        return _up(
            settings,
            agents,
            offline_model=offline_model,
            dashboard=dashboard,
            env=dict(os.environ if base_env is None else base_env),
            worker_extra_env=worker_extra_env,
            timeout_seconds=timeout_seconds,
            step=on_step or (lambda _: None),
        )


def _up(
    settings: ConductorSettings,
    agents: int | None,
    *,
    offline_model: bool,
    dashboard: bool | None,
    env: dict[str, str],
    worker_extra_env: Mapping[str, str] | None,
    timeout_seconds: float,
    step: Callable[[str], None],
) -> StackInfo:
    if agents is not None:
        if agents != settings.worker.agents:
            _save_agents(settings, agents)
        settings = settings.model_copy(
            update={"worker": settings.worker.model_copy(update={"agents": agents})}
        )
    for folder in (settings.home, settings.run_dir, settings.logs_dir):
        folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_seconds

    def remaining() -> float:
        return max(1.0, deadline - time.monotonic())

    started: list[str] = []
    already: list[str] = []
    new_workers: dict[str, processes.Daemon] = {}
    extra = dict(worker_extra_env or {})

    def start_worker() -> None:
        step(f"starting {launch.WORKER}")
        new_workers[launch.WORKER] = processes.start_daemon(
            settings,
            launch.WORKER,
            launch.worker_argv(settings),
            env=launch.worker_env(settings, env, extra),
            cwd=_worker_cwd(settings),
        )
        started.append(launch.WORKER)

    try:
        clean = teardown.take_clean_stop(settings)
        if processes.is_running(settings, launch.SERVER):
            already.append(launch.SERVER)
        else:
            step("starting the Prefect server")
            _start_server(settings, env)
            started.append(launch.SERVER)
        if offline_model:
            step("starting the scripted model")
            url, new = addons.ensure_scripted_model(settings, env, remaining())
            (started if new else already).append(addons.SCRIPTED_MODEL)
            extra.update(addons.model_env(url))
        _stop_old_workers(settings)
        worker_alive = processes.is_running(settings, launch.WORKER)
        # The whole stack died (the server too) without `down`: no process will report on
        # its runs, so they are ended before a worker starts. When only the worker died, its
        # successor adopts or ends them itself (work_pools.worker).
        check_runs = (
            launch.SERVER in started
            and not worker_alive
            and not clean
            and not teardown.flow_run_processes(settings)
        )
        if not worker_alive and not check_runs:
            start_worker()  # now: its imports overlap the server's start; it waits for the API
        step(f"waiting for the Prefect server at {launch.local_api_url(settings)}")
        _wait_server(settings, remaining())
        if launch.SERVER in started:
            launch.record_server_prepared(settings)
        if check_runs:
            step("checking for runs an unclean stop left in flight")
            teardown.crash_interrupted_runs(settings)
        if launch.WORKER not in new_workers:
            if _keep_worker(settings, launch.WORKER, offline_model=offline_model, env=env):
                already.append(launch.WORKER)
            else:
                start_worker()
        board = None
        if settings.dashboard.enabled if dashboard is None else dashboard:
            step("starting the dashboard")
            board = addons.start_dashboard(settings, env, required=dashboard is True)
            if board is not None:
                started.append(addons.DASHBOARD)
            elif processes.is_running(settings, addons.DASHBOARD):
                already.append(addons.DASHBOARD)
        step(
            "creating the work pools and registering the deployments"
            + (" while the worker starts" if new_workers else "")
        )
        run_sync(_prepare_and_wait(settings, new_workers, remaining()))
        if board is not None:
            step("waiting for the dashboard")
            addons.wait_dashboard(settings, board, remaining())
    except BaseException:
        for name in reversed(started):
            processes.stop_daemon(settings, name, grace_seconds=5)
        raise
    info = status(settings)
    return info.model_copy(update={"started": started, "already_running": already})


def _stop_old_workers(settings: ConductorSettings) -> None:
    """Workers of an older Conductor (one process per pool) make way for the one worker."""
    for name in processes.pid_file_names(settings):
        if name.startswith("worker-") and processes.is_running(settings, name):
            processes.stop_daemon(settings, name)


def _keep_worker(
    settings: ConductorSettings, name: str, *, offline_model: bool, env: Mapping[str, str]
) -> bool:
    """True when worker ``name`` runs and fits the request. A running worker pointed at the
    wrong model (scripted when real credentials are at hand, or the other way round) is
    stopped so it can be started again, but only when no run is in flight."""
    daemon = processes.read_daemon(settings, name)
    if daemon is None or not daemon.alive:
        return False
    scripted = addons.uses_scripted_model(daemon.pid)
    if scripted == offline_model or (scripted and not addons.has_model_credentials(env)):
        return True
    busy = run_sync(_busy_runs(settings))
    if busy:
        want = "the scripted model" if offline_model else "your ANTHROPIC_* credentials"
        raise ConductorError(
            f"the running workers use {'the scripted model' if scripted else 'a real model'}, "
            f"not {want}, and {busy} runs are in flight; wait for them (or `conductor down`) "
            "and run this again"
        )
    processes.stop_daemon(settings, name)
    return False


async def _busy_runs(settings: ConductorSettings) -> int:
    async with api_reader(settings, api_url=launch.local_api_url(settings)) as api:
        total = 0
        for kind in ("agents", "coordinators"):
            pool = await read_pool_status(api, pool_name(settings, kind))
            total += pool.busy if pool is not None else 0
        return total


def _worker_cwd(settings: ConductorSettings) -> Path:
    """An empty directory of its own: nothing of the home is ever in a worker's way."""
    path = settings.run_dir / "worker-cwd"
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- down --------------------------------------------------------------------------------


def down(settings: ConductorSettings, grace_seconds: float = 10.0) -> list[DaemonStatus]:
    """Stop everything of the stack and leave nothing running (see ``teardown.stop_stack``).
    Returns what was stopped. Scheduled runs and all history stay in the database."""
    with processes.locked(settings):
        return teardown.stop_stack(settings, grace_seconds)


# -- status and scale ----------------------------------------------------------------------


def _save_agents(settings: ConductorSettings, agents: int) -> Path:
    """Write ``worker.agents`` into ``<home>/config.yaml``, keeping every other key."""

    def edit(data: dict[str, Any]) -> None:
        worker = data.get("worker")
        data["worker"] = {**(worker if isinstance(worker, dict) else {}), "agents": agents}

    return config_file.edit_config(settings.home, edit)


def scale_agents(settings: ConductorSettings, agents: int) -> ScaleResult:
    """Set the number of agent slots: on the running server at once (no restart; runs in
    flight keep going, waiting ones start as slots free up) and in ``<home>/config.yaml``."""
    _check_agents(agents)
    with processes.locked(settings):
        return _scale(settings, agents)


def _scale(settings: ConductorSettings, agents: int) -> ScaleResult:
    path = _save_agents(settings, agents)
    applied = False
    if processes.http_ok(launch.health_url(settings.server.url)):

        async def _apply() -> None:
            async with conductor_client(settings) as client:
                await set_agent_slots(client, settings, agents)

        run_sync(_apply())
        applied = True
    return ScaleResult(agents=agents, applied_live=applied, config_path=str(path))
