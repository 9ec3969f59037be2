"""The control plane of the Kubernetes tier, on one machine, for ``control_plane_load.py``:
Debian's PostgreSQL (``initdb`` + ``postgres`` in a temp dir, loopback only), Debian's Redis,
``prefect server database upgrade``, one API replica (``prefect server start --no-services``)
and the background services (``prefect server services start``), configured as
``deployments/kubernetes/base`` configures them (Redis messaging, causal ordering, lease
storage and docket; basic auth; no migration on start).

Every process is started in its own session and stopped by its PID (its group): ``stop()``
runs on success, failure and Ctrl-C. Nothing is downloaded; nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from _common import alive, free_port, stop_pids, wait_http

__all__ = [
    "MissingBinary",
    "Stack",
    "find_binaries",
    "log_errors",
    "process_cpu_seconds",
    "process_rss_mib",
    "start_stack",
]

_READY_SECONDS = 120.0


class MissingBinary(RuntimeError):
    """A server binary the benchmark needs is not installed."""


def find_binaries() -> dict[str, str]:
    """Paths of ``initdb``, ``postgres`` and ``redis-server`` (Debian keeps PostgreSQL's in
    ``/usr/lib/postgresql/<version>/bin``); MissingBinary naming the apt package otherwise."""
    found: dict[str, str] = {}
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
    )
    for name in ("initdb", "postgres"):
        path = shutil.which(name) or next(
            (f"{d}/{name}" for d in reversed(versions) if os.access(f"{d}/{name}", os.X_OK)), None
        )
        if path is None:
            raise MissingBinary(
                f"PostgreSQL's {name!r} was not found (PATH or /usr/lib/postgresql/*/bin): "
                "install it with `apt-get install postgresql`"
            )
        found[name] = path
    redis = shutil.which("redis-server")
    if redis is None:
        raise MissingBinary(
            "'redis-server' was not found on PATH: install it with `apt-get install redis-server`"
        )
    found["redis-server"] = redis
    return found


def _version(argv: list[str]) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


@dataclass
class Stack:
    """What ``start_stack`` started; ``stop()`` ends all of it (idempotent)."""

    root: Path
    api_url: str
    auth_string: str
    env: dict[str, str]
    pids: dict[str, int] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    startup_seconds: dict[str, float] = field(default_factory=dict)
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def client_env(self) -> dict[str, str]:
        """The environment of a client process (the load generators)."""
        server_only = ("PREFECT_SERVER_", "PREFECT_REDIS", "PREFECT_MESS", "PREFECT_API_DATABASE")
        env = {k: v for k, v in self.env.items() if not k.startswith(server_only)}
        env["PREFECT_API_URL"] = self.api_url
        env["PREFECT_API_AUTH_STRING"] = self.auth_string
        return env

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.root / f"{name}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check_alive(self) -> None:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {proc.returncode}; its log ends:\n"
                    + self.log_tail(name)
                )

    def stop(self) -> None:
        """Clients first (API, services), then Redis and PostgreSQL (fast shutdown)."""
        order = ["api", "services", "redis"]
        stop_pids([self.pids[n] for n in order if n in self.pids], grace_seconds=10.0)
        pg = self.pids.get("postgres")
        if pg is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pg, signal.SIGINT)  # fast shutdown: roll back sessions, checkpoint
            deadline = time.monotonic() + 15.0
            while alive(pg) and time.monotonic() < deadline:
                time.sleep(0.05)
            stop_pids([pg], grace_seconds=5.0)
        for proc in self._procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1.0)
        self._procs.clear()
        shutil.rmtree(self.root, ignore_errors=True)


def _db_user() -> str | None:
    """PostgreSQL refuses to run as root: run it as ``postgres`` (Debian's) or ``nobody``."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise MissingBinary("running as root without a 'postgres' or 'nobody' user to run PostgreSQL")


def _spawn(
    stack: Stack, name: str, argv: list[str], env: dict[str, str], user: str | None = None
) -> subprocess.Popen[bytes]:
    log = open(stack.root / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
    try:
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=stack.root,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user,
        )
    finally:
        log.close()
    stack._procs[name] = proc
    stack.pids[name] = proc.pid
    return proc


def _wait_port(port: int, timeout_seconds: float, stack: Stack) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        stack.check_alive()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listened on 127.0.0.1:{port} within {timeout_seconds:.0f} s")


async def _create_database(port: int) -> None:
    import asyncpg

    deadline = time.monotonic() + 30.0
    while True:
        try:
            conn = await asyncpg.connect(
                host="127.0.0.1", port=port, user="postgres", database="postgres"
            )
            break
        except (OSError, asyncpg.PostgresError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
    try:
        await conn.execute("CREATE DATABASE prefect")
    finally:
        await conn.close()
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database="prefect")
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    finally:
        await conn.close()


def _start_postgres(stack: Stack, bins: dict[str, str], env: dict[str, str]) -> int:
    user = _db_user()
    data, sock = stack.root / "pgdata", stack.root / "pgsock"
    sock.mkdir()
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(stack.root, entry.pw_uid, entry.pw_gid)
        os.chown(sock, entry.pw_uid, entry.pw_gid)
    pg_env = {"PATH": env.get("PATH", os.defpath), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    init = subprocess.run(
        [bins["initdb"], "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
         "--locale=C", "--no-sync"],
        env=pg_env, cwd=stack.root, capture_output=True, text=True, timeout=120, user=user,
        check=False,
    )  # fmt: skip
    if init.returncode != 0:
        raise RuntimeError(f"initdb failed ({init.returncode}): {init.stderr.strip()[-800:]}")
    port = free_port()
    stack.settings["postgres"] = {"max_connections": 200, "others": "Debian defaults"}
    _spawn(
        stack,
        "postgres",
        [bins["postgres"], "-D", str(data), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
         "-c", f"unix_socket_directories={sock}", "-c", "max_connections=200"],
        pg_env,
        user=user,
    )  # fmt: skip
    _wait_port(port, 60.0, stack)
    asyncio.run(_create_database(port))
    return port


def _start_redis(stack: Stack, bins: dict[str, str], env: dict[str, str]) -> int:
    port = free_port()
    _spawn(
        stack,
        "redis",
        [bins["redis-server"], "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--daemonize", "no", "--dir", str(stack.root)],
        {"PATH": env.get("PATH", os.defpath)},
    )  # fmt: skip
    _wait_port(port, 30.0, stack)
    return port


def _server_env(base: dict[str, str], root: Path, pg_port: int, redis_port: int) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith(("PREFECT_", "CONDUCTOR_"))}
    env.update(
        {
            "PREFECT_HOME": str(root / "prefect-home"),
            "PREFECT_API_DATABASE_CONNECTION_URL": (
                f"postgresql+asyncpg://postgres@127.0.0.1:{pg_port}/prefect"
            ),
            "PREFECT_API_DATABASE_MIGRATE_ON_START": "false",
            "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
            "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
            "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
            "PREFECT_REDIS_MESSAGING_HOST": "127.0.0.1",
            "PREFECT_REDIS_MESSAGING_PORT": str(redis_port),
            "PREFECT_REDIS_MESSAGING_DB": "0",
            "PREFECT_SERVER_DOCKET_URL": f"redis://127.0.0.1:{redis_port}/1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_LOGGING_SERVER_LEVEL": "WARNING",
        }
    )
    return env


_ERROR_LINE = re.compile(r"^((?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception)): (.*)$")


def log_errors(path: Path, offset: int) -> tuple[dict[str, int], int]:
    """Exceptions a server logged after byte ``offset`` of its log (type and the start of
    the message, ids masked), most frequent first; and the new end offset."""
    counts: dict[str, int] = {}
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return {}, offset
    for line in data.decode("utf-8", "replace").splitlines():
        match = _ERROR_LINE.match(line)  # a traceback's last line starts at column 0
        if match is not None:
            key = f"{match.group(1)}: {_IDS.sub('…', match.group(2))[:110]}"
            counts[key] = counts.get(key, 0) + 1
    top = dict(sorted(counts.items(), key=lambda kv: -kv[1])[:8])
    return top, offset + len(data)


_IDS = re.compile(r"[0-9a-f]{8}-[0-9a-f-]{27}|\b\d{3,}\b")


def start_stack(
    base_env: dict[str, str], db_pool_size: int | None = None, db_max_overflow: int | None = None
) -> Stack:
    """PostgreSQL, Redis, migrations, the API and the services; raises (after stopping what
    it started) when any of them does not come up."""
    bins = find_binaries()
    root = Path(tempfile.mkdtemp(prefix="conductor-cp-load-"))
    os.chmod(root, 0o755)
    auth = f"bench:{secrets.token_urlsafe(18)}"
    stack = Stack(root=root, api_url="", auth_string=auth, env={})
    try:
        stack.versions = {
            "postgresql": _version([bins["postgres"], "--version"]),
            "redis": _version([bins["redis-server"], "--version"]),
        }
        began = time.monotonic()

        def lap(name: str) -> None:
            stack.startup_seconds[name] = round(time.monotonic() - began, 1)

        pg_port = _start_postgres(stack, bins, base_env)
        lap("postgres_ready")
        redis_port = _start_redis(stack, bins, base_env)
        lap("redis_ready")
        env = _server_env(base_env, root, pg_port, redis_port)
        if db_pool_size is not None:
            env["PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE"] = str(db_pool_size)
        if db_max_overflow is not None:
            env["PREFECT_SERVER_DATABASE_SQLALCHEMY_MAX_OVERFLOW"] = str(db_max_overflow)
        stack.settings["prefect_db_pool"] = {
            "pool_size": db_pool_size if db_pool_size is not None else "Prefect's default (5)",
            "max_overflow": db_max_overflow
            if db_max_overflow is not None
            else "Prefect's default (10)",
        }
        stack.env = env
        migrate = subprocess.run(
            [sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"],
            env=env, cwd=root, capture_output=True, text=True, timeout=600, check=False,
            start_new_session=True,
        )  # fmt: skip
        if migrate.returncode != 0:
            raise RuntimeError(f"migrations failed: {(migrate.stdout + migrate.stderr)[-800:]}")
        lap("migrated")
        api_port = free_port()
        server_env = {**env, "PREFECT_SERVER_API_AUTH_STRING": auth}
        _spawn(
            stack,
            "api",
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(api_port), "--no-services"],
            server_env,
        )  # fmt: skip
        _spawn(stack, "services", [sys.executable, "-m", "prefect", "server", "services", "start"],
               server_env)  # fmt: skip
        stack.api_url = f"http://127.0.0.1:{api_port}/api"
        if not wait_http(stack.api_url + "/health", _READY_SECONDS):
            stack.check_alive()
            raise RuntimeError(f"the API did not answer {stack.api_url}/health in time")
        stack.check_alive()
        lap("api_ready")
        return stack
    except BaseException:
        stack.stop()
        raise


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its descendants, including children they
    already reaped (PostgreSQL backends that ended)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def process_rss_mib(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return round(total / 2**20, 1)
