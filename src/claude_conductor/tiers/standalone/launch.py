"""The commands and environments of the standalone tier's processes, as pure functions (tests
check them without spawning anything).

Everything Prefect keeps lives under ``<home>/prefect`` (``PREFECT_HOME``: the SQLite database,
profiles, local result storage), so a user's own ``~/.prefect`` and Prefect Cloud login are
never touched. Inherited ``PREFECT_*`` variables that would point a process at another API,
profile or database are dropped; the rest of the caller's environment (``ANTHROPIC_*``,
``CONDUCTOR_*``, ``PATH``, ``PYTHONPATH`` ...) passes through to the workers and from them to
every flow run and agent.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from claude_conductor.logging_json import prefect_logging_env
from claude_conductor.settings import ConductorSettings
from claude_conductor.work_pools.names import PoolKind, pool_name

__all__ = [
    "AGENT_WORKER",
    "COORDINATOR_WORKER",
    "SERVER",
    "STACK_MARKER",
    "WORKER",
    "WORKER_POOLS",
    "WorkerKind",
    "database_url",
    "health_url",
    "local_api_url",
    "prefect_home",
    "record_server_prepared",
    "server_argv",
    "server_env",
    "server_prepared",
    "ui_url",
    "worker_argv",
    "worker_env",
    "worker_name",
]

SERVER = "prefect-server"
WORKER = "worker"
"""One worker process serves both pools (``work_pools.serve``), each with its own slots."""
AGENT_WORKER = WORKER  # the process that runs the agents' flow runs
COORDINATOR_WORKER = WORKER  # ... and the fan-out parents'
WORKER_POOLS: tuple[PoolKind, ...] = ("agents", "coordinators")
#: Set in every process of a stack (inherited by flow runs and agents): ``down`` finds them all.
STACK_MARKER = "CONDUCTOR_STACK"

WorkerKind = PoolKind

# Inherited variables that would point a process elsewhere than the stack's own server/home.
_DROPPED_PREFIXES = (
    "PREFECT_API_",
    "PREFECT_SERVER_",
    "PREFECT_UI_",
    "PREFECT_WORKER_",
    "PREFECT_PROFILE",
    "PREFECT_HOME",
    "PREFECT_CLOUD_",
    "PREFECT__",  # a flow run's own identity (when `up` is called from inside one)
)


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def local_api_url(settings: ConductorSettings) -> str:
    """The API of the server this tier runs (ignores ``server.api_url``)."""
    return f"http://{_client_host(settings.server.host)}:{settings.server.port}/api"


def health_url(api_url: str) -> str:
    return api_url.rstrip("/") + "/health"


def ui_url(settings: ConductorSettings) -> str:
    return f"http://{_client_host(settings.server.host)}:{settings.server.port}"


def prefect_home(settings: ConductorSettings) -> Path:
    return settings.home / "prefect"


def database_url(settings: ConductorSettings) -> str:
    return f"sqlite+aiosqlite:///{prefect_home(settings) / 'prefect.db'}"


def _base(base_env: Mapping[str, str], settings: ConductorSettings) -> dict[str, str]:
    env = {k: v for k, v in base_env.items() if not k.startswith(_DROPPED_PREFIXES)}
    env.update(
        {
            "PREFECT_HOME": str(prefect_home(settings)),
            "DO_NOT_TRACK": "1",
            "PYTHONUNBUFFERED": "1",
            STACK_MARKER: str(settings.home),
        }
    )
    env.update(prefect_logging_env(settings))  # JSON log lines when log_format is json
    return env


_PREPARED_FILE = "server-prepared.json"
"""Beside the database: what the last server that migrated it and registered Prefect's block
types ran (``record_server_prepared``)."""


def _server_fingerprint(settings: ConductorSettings) -> dict[str, Any] | None:
    """What a server start prepares the database for: Prefect's version, the installed Prefect
    collections (they bring block types) and the database file itself (a restored or new one
    is another file). None when there is no database yet."""
    try:
        stat = (prefect_home(settings) / "prefect.db").stat()
    except OSError:
        return None
    collections = importlib.metadata.entry_points(group="prefect.collections")
    return {
        "prefect": importlib.metadata.version("prefect"),
        "collections": sorted({f"{e.dist.name}=={e.dist.version}" for e in collections if e.dist}),
        "database": [stat.st_dev, stat.st_ino],
    }


def server_prepared(settings: ConductorSettings) -> bool:
    """Whether the database is already migrated and has the block types of what is installed:
    then the server skips both at start (about a second of a warm ``up``)."""
    fingerprint = _server_fingerprint(settings)
    try:
        recorded = json.loads((prefect_home(settings) / _PREPARED_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return fingerprint is not None and recorded == fingerprint


def record_server_prepared(settings: ConductorSettings) -> None:
    """After a server came up healthy (it migrated the database and registered the block
    types, or found them done): remember it for the next start."""
    fingerprint = _server_fingerprint(settings)
    if fingerprint is None:
        return
    path = prefect_home(settings) / _PREPARED_FILE
    with contextlib.suppress(OSError):
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(fingerprint), "utf-8")
        os.replace(tmp, path)


def server_argv(settings: ConductorSettings, python: str = sys.executable) -> list[str]:
    """``prefect server start``, through ``tiers.prefect_server`` (SQLite transactions begun
    IMMEDIATE: concurrent writers wait instead of being refused; schemas checked once)."""
    return [
        python, "-m", "claude_conductor.tiers.prefect_server",
        "--host", settings.server.host,
        "--port", str(settings.server.port),
        "--analytics-off",
    ]  # fmt: skip


def server_env(settings: ConductorSettings, base_env: Mapping[str, str]) -> dict[str, str]:
    api_url = local_api_url(settings)
    env = _base(base_env, settings)
    env.update(
        {
            "PREFECT_API_DATABASE_CONNECTION_URL": database_url(settings),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_API_HOST": settings.server.host,
            "PREFECT_SERVER_API_PORT": str(settings.server.port),
            "PREFECT_API_URL": api_url,
            "PREFECT_UI_API_URL": api_url,
        }
    )
    if settings.server.auth_string is not None:
        env["PREFECT_SERVER_API_AUTH_STRING"] = settings.server.auth_string.get_secret_value()
    if server_prepared(settings):
        env.update(
            {
                "PREFECT_API_DATABASE_MIGRATE_ON_START": "false",
                "PREFECT_API_BLOCKS_REGISTER_ON_START": "false",
                "PREFECT_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false",
            }
        )
    return env


def worker_name(settings: ConductorSettings, kind: WorkerKind) -> str:
    return f"{pool_name(settings, kind)}-worker"


def worker_argv(settings: ConductorSettings, python: str = sys.executable) -> list[str]:
    """The worker process: a Conductor worker (``work_pools.worker``, type ``conductor``)
    for each pool, sharing one warm forkserver. No worker ``--limit``: the pools'
    concurrency limits are the one gate (server-side, by queue priority, changeable while
    running); a worker limit could only be raised by restarting the worker."""
    argv = [python, "-m", "claude_conductor.work_pools.serve"]
    for kind in WORKER_POOLS:
        argv += ["--pool", pool_name(settings, kind), "--name", worker_name(settings, kind)]
    return argv


def worker_env(
    settings: ConductorSettings,
    base_env: Mapping[str, str],
    extra_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The worker's environment, which every flow run (and agent) it starts inherits."""
    api_url = local_api_url(settings)
    env = _base(base_env, settings)
    env.update(
        {
            "PREFECT_API_URL": api_url,
            "PREFECT_WORKER_QUERY_SECONDS": f"{settings.worker.query_seconds:g}",
            "CONDUCTOR_HOME": str(settings.home),
            "CONDUCTOR_API_URL": api_url,
        }
    )
    if settings.server.auth_string is not None:
        env["PREFECT_API_AUTH_STRING"] = settings.server.auth_string.get_secret_value()
    if settings.worker.preload:
        env["CONDUCTOR_WORKER__PRELOAD"] = json.dumps(settings.worker.preload)
    env.update(extra_env or {})
    return env
