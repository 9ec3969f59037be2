"""The worker's side of the forkserver (``work_pools.forkserver``): start it warm, check its
health, restart it when it dies or when the installed code changes, and start flow runs from
it through Prefect's ``ProcessStarter`` protocol (``ForkStarter``), so Prefect's own per-run
machinery (state proposals, the cancellation observer, crash detection by exit code) drives
forked runs exactly as it drives ``python -m prefect.engine`` processes.

One forkserver serves every worker of a process (``shared_forkserver``). A process that has
not started threads or an event loop yet (``work_pools.serve``) forks its first forkserver
itself (``prefork``) after importing what the forkserver preloads: the two then share those
pages (copy-on-write) instead of each holding its own copy of Prefect, and the forkserver is
ready as soon as the worker is. Replacements (after a crash or a code change) are fresh
``python -m claude_conductor.work_pools.forkserver`` processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import anyio.abc
from prefect.runner._process_manager import ProcessHandle, _PosixProcessGroupTerminationScope
from prefect.settings import get_current_settings
from prefect.utilities.processutils import sanitize_subprocess_env

from claude_conductor.errors import ConductorError
from claude_conductor.settings import ConductorSettings
from claude_conductor.system.processes import is_live
from claude_conductor.work_pools import forkserver as _forkserver
from claude_conductor.work_pools.forkserver import MAX_MESSAGE_BYTES

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun
    from prefect.runner._control_channel import ControlChannel

__all__ = [
    "DEFAULT_PRELOAD",
    "ForkStarter",
    "ForkedRun",
    "Forkserver",
    "ForkserverUnavailable",
    "code_fingerprint",
    "engine_environment",
    "prefork",
    "run_records_dir",
    "settings_environment",
    "shared_forkserver",
]

logger = logging.getLogger(__name__)

DEFAULT_PRELOAD: tuple[str, ...] = (
    "prefect.engine",
    "prefect.flow_engine",
    "prefect._internal.metrics",
    "prefect.events.worker",
    "prefect.logging.handlers",
    "prefect.artifacts",
    "prefect.deployments",
    "prefect.task_engine",
    "prefect._internal.states",
    "prefect.concurrency._asyncio",
    "prefect.concurrency._sync",
    "prefect.concurrency.services",
    "prefect.utilities.visualization",
    "anyio._backends._asyncio",
    "encodings.idna",
    "rich._emoji_codes",
    "claude_conductor.work_pools.run_logs",
    "claude_conductor.flows.task_flow",
    "claude_conductor.flows.fanout",
)
"""What the forkserver imports once: Prefect's engine and Conductor's flows."""

_READY_TIMEOUT_SECONDS = 120.0
_PING_TIMEOUT_SECONDS = 5.0
_START_TIMEOUT_SECONDS = 60.0
_RESTART_BACKOFF_SECONDS = (0.5, 2.0, 10.0, 30.0)


def run_records_dir(settings: ConductorSettings) -> Path:
    """Where the forkserver records each flow run's engine while it runs (one JSON file
    each, ``system.processes.recorded_processes``): how ``conductor down`` finds engines
    that, being non-dumpable, cannot be found by their environment."""
    return settings.run_dir / "flow-runs"


class ForkserverUnavailable(ConductorError):
    """The forkserver could not be started or reached; runs use the stock starter."""


def code_fingerprint(files: list[str]) -> tuple[tuple[int, int, int], ...]:
    """(mtime, size, inode) of each file: changes when the code is edited in place or
    reinstalled (an installer writes new files, so new inodes, even when it keeps the
    packaged modification times)."""
    stamps: list[tuple[int, int, int]] = []
    for path in files:
        try:
            st = os.stat(path)
        except OSError:
            stamps.append((-1, -1, -1))
        else:
            stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(stamps)


class _Process(Protocol):
    """What is needed of a forkserver process (asyncio's ``Process`` or ``_ForkedChild``)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def send_signal(self, signal: int) -> None: ...


class _ForkedChild:
    """A forkserver this process forked itself (``prefork``), seen as asyncio sees a
    subprocess: pid, exit code (reaped here, by its pid only), wait and signal."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._code: int | None = None

    @property
    def returncode(self) -> int | None:
        if self._code is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self._code = 255  # reaped elsewhere: gone all the same
            else:
                if pid:
                    self._code = os.waitstatus_to_exitcode(status)
        return self._code

    async def wait(self) -> int:
        while (code := self.returncode) is None:
            await asyncio.sleep(0.05)
        return code

    def send_signal(self, signal: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal)


_PREFORKED: list[tuple[_ForkedChild, socket.socket]] = []


def prefork(preload: tuple[str, ...], records_dir: Path | None = None) -> int | None:
    """Import ``preload`` here, then fork the first forkserver from this process, to be
    adopted by ``shared_forkserver``. Call it before any thread or event loop starts (the
    fork copies only the calling thread); when other threads run already it does nothing
    and the forkserver is spawned as usual. Returns the forkserver's pid (None: not forked)."""
    errors = _forkserver.preload_modules(list(preload))
    for error in errors:
        logger.warning("could not preload %s", error)
    if threading.active_count() > 1 or _PREFORKED:
        return None
    gc.collect()
    gc.freeze()  # neither side's collector then writes to the pages they share
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:  # the forkserver: never returns
        code = 1
        try:
            parent.close()
            code = _forkserver.run(child, list(preload), records_dir)
        finally:
            os._exit(code)
    child.close()
    _PREFORKED.append((_ForkedChild(pid), parent))
    return pid


@dataclass
class _Server:
    process: _Process
    control: socket.socket
    files: list[str]
    fingerprint: tuple[tuple[int, int, int], ...]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def alive(self) -> bool:
        return self.process.returncode is None


class Forkserver:
    """A warm forkserver process, replaced when it dies or the code changes."""

    def __init__(
        self,
        preload: tuple[str, ...] = DEFAULT_PRELOAD,
        *,
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
        records_dir: Path | None = None,
        preforked: tuple[_ForkedChild, socket.socket] | None = None,
    ) -> None:
        self._preforked = preforked
        self.preload = preload
        self._python = python
        self._env = env
        self.records_dir = records_dir
        self._server: _Server | None = None
        self._start_lock = asyncio.Lock()
        self._failures = 0
        self._retry_at = 0.0
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return self._server.process.pid if self._server is not None else None

    async def start(self) -> None:
        """Start (or replace) the forkserver and wait until it has imported everything."""
        process: _Process
        if self._preforked is not None:
            (process, parent), self._preforked = self._preforked, None
        else:
            process, parent = await self._spawn()
        parent.setblocking(False)
        await self._finish_start(process, parent)

    async def _spawn(self) -> tuple[_Process, socket.socket]:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [
            self._python,
            "-m",
            "claude_conductor.work_pools.forkserver",
            "--fd",
            str(child.fileno()),
            "--preload",
            ",".join(self.preload),
        ]
        if self.records_dir is not None:
            argv += ["--records", str(self.records_dir)]
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                pass_fds=(child.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                env=dict(os.environ if self._env is None else self._env),
            )
        except OSError as exc:
            parent.close()
            raise ForkserverUnavailable(f"could not start the forkserver: {exc}") from exc
        finally:
            child.close()
        return process, parent

    async def _finish_start(self, process: _Process, parent: socket.socket) -> None:
        try:
            files, ready = await asyncio.wait_for(_read_ready(parent), _READY_TIMEOUT_SECONDS)
        except (TimeoutError, OSError, ValueError) as exc:
            await _stop_process(process, parent)
            raise ForkserverUnavailable(f"the forkserver did not get ready: {exc!r}") from exc
        if ready.get("event") != "ready":
            await _stop_process(process, parent)
            raise ForkserverUnavailable(
                f"the forkserver exited while importing (exit code {process.returncode})"
            )
        for error in ready.get("errors", []):
            logger.warning("forkserver could not preload %s", error)
        if ready.get("threads", 1) > 1:
            logger.warning(
                "the forkserver runs %s threads after preloading; forked runs may deadlock",
                ready["threads"],
            )
        fingerprint = await asyncio.to_thread(code_fingerprint, files)
        old, self._server = self._server, _Server(process, parent, files, fingerprint)
        self._failures = 0
        if old is not None:
            self.restarts += 1
            await _stop_process(old.process, old.control, graceful=True)
        logger.info("forkserver %d ready (%d modules' files watched)", process.pid, len(files))

    async def ensure(self) -> bool:
        """A live forkserver running the installed code: restart it when it died or when a
        loaded file changed. False when none can be had (use the stock starter)."""
        async with self._start_lock:
            server = self._server
            if server is not None and server.alive:
                current = await asyncio.to_thread(code_fingerprint, server.files)
                if current == server.fingerprint:
                    return True
                logger.info("the installed code changed: restarting the forkserver")
            elif server is not None:
                logger.warning(
                    "forkserver %d exited (code %s): starting a new one",
                    server.process.pid,
                    server.process.returncode,
                )
            if time.monotonic() < self._retry_at:
                return False
            try:
                await self.start()
            except ForkserverUnavailable as exc:
                delay = _RESTART_BACKOFF_SECONDS[
                    min(self._failures, len(_RESTART_BACKOFF_SECONDS) - 1)
                ]
                self._failures += 1
                self._retry_at = time.monotonic() + delay
                logger.warning("%s; the stock starter is used (retry in %.0fs)", exc, delay)
                return False
            return True

    async def ping(self, timeout_seconds: float = _PING_TIMEOUT_SECONDS) -> bool:
        server = self._server
        if server is None or not server.alive:
            return False
        loop = asyncio.get_running_loop()
        async with server.lock:
            try:
                await loop.sock_sendall(server.control, b'{"op": "ping"}')
                data = await asyncio.wait_for(
                    loop.sock_recv(server.control, MAX_MESSAGE_BYTES), timeout_seconds
                )
            except (TimeoutError, OSError):
                return False
        return bool(data) and json.loads(data).get("event") == "pong"

    async def watch(self, interval_seconds: float = 2.0) -> None:
        """Replace the forkserver as soon as it dies (a health check every interval)."""
        while True:
            await asyncio.sleep(interval_seconds)
            server = self._server
            if server is not None and not server.alive:
                await self.ensure()

    async def fork(self, request: dict[str, Any]) -> socket.socket:
        """Ask for a run; returns this side of the run's own socket."""
        server = self._server
        if server is None or not server.alive:
            raise ForkserverUnavailable("no forkserver is running")
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        payload = json.dumps({"op": "run", **request}).encode()
        if len(payload) > MAX_MESSAGE_BYTES and "flow_run" in request:
            # Parameters too large to hand over: the engine reads the run itself.
            request = {k: v for k, v in request.items() if k != "flow_run"}
            payload = json.dumps({"op": "run", **request}).encode()
        try:
            for _ in range(100):  # the socket is non-blocking: wait out a full buffer
                try:
                    socket.send_fds(server.control, [payload], [theirs.fileno()])
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.01)
            else:
                raise ForkserverUnavailable("the forkserver does not take runs (its queue is full)")
        except OSError as exc:
            mine.close()
            raise ForkserverUnavailable(f"the forkserver did not take the run: {exc}") from exc
        finally:
            theirs.close()
        return mine

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await _stop_process(server.process, server.control, graceful=True)


async def _read_ready(control: socket.socket) -> tuple[list[str], dict[str, Any]]:
    """The forkserver's file list, then its ready message (or {} when it exits first)."""
    loop = asyncio.get_running_loop()
    files: list[str] = []
    while True:
        data = await loop.sock_recv(control, MAX_MESSAGE_BYTES)
        if not data:
            return files, {}
        message: dict[str, Any] = json.loads(data)
        if message.get("event") != "files":
            return files, message
        files.extend(message.get("files", []))


async def _stop_process(
    process: _Process, control: socket.socket, *, graceful: bool = False
) -> None:
    """Stop a forkserver (runs it forked already go on: they are not its to stop)."""
    if graceful and process.returncode is None:
        with contextlib.suppress(OSError):
            control.setblocking(True)
            control.send(b'{"op": "stop"}')
    control.close()
    for signum in (None, 15, 9):
        if process.returncode is not None:
            break
        if signum is not None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 3.0)


_SHARED: dict[str, Any] = {"server": None, "users": 0}


@contextlib.asynccontextmanager
async def shared_forkserver(
    preload: tuple[str, ...] = DEFAULT_PRELOAD, records_dir: Path | None = None
) -> Any:
    """The process's one forkserver, started by its first user and stopped by its last."""
    if _SHARED["server"] is None:
        preforked = _PREFORKED.pop() if _PREFORKED else None
        server = Forkserver(preload, records_dir=records_dir, preforked=preforked)
        _SHARED["server"] = server
        try:
            await server.start()
        except ForkserverUnavailable as exc:
            logger.warning("%s; flow runs use the stock starter until it can be started", exc)
        _SHARED["watch"] = asyncio.ensure_future(server.watch())
    _SHARED["users"] += 1
    try:
        yield _SHARED["server"]
    finally:
        _SHARED["users"] -= 1
        if _SHARED["users"] == 0:
            server = _SHARED["server"]
            _SHARED["server"] = None
            watcher = _SHARED.pop("watch", None)
            if watcher is not None:
                watcher.cancel()
            await server.stop()


_settings_env: tuple[Any, dict[str, str]] | None = None


def settings_environment() -> dict[str, str]:
    """The worker's Prefect settings as variables, as every run's environment starts from
    them: built once per settings object (about 20 ms of CPU, twice on the path of every
    run's start otherwise: the job configuration's base environment and the engine's)."""
    global _settings_env
    settings = get_current_settings()
    if _settings_env is None or _settings_env[0] is not settings:
        _settings_env = (settings, settings.to_environment_variables(exclude_unset=True))
    return dict(_settings_env[1])


def engine_environment(
    flow_run: FlowRun,
    base_env: Mapping[str, str | None],
    *,
    entrypoint: str,
    control_env: Mapping[str, str],
) -> dict[str, str]:
    """The environment of a flow run's engine, as Prefect's ``EngineCommandStarter`` builds
    it for ``python -m prefect.engine``."""
    env: dict[str, str | None] = {**os.environ, **base_env}
    env.update(settings_environment())
    env.update(
        {
            "PREFECT__FLOW_RUN_ID": str(flow_run.id),
            "PREFECT__ENABLE_CANCELLATION_AND_CRASHED_HOOKS": "false",
            "PREFECT__FLOW_ENTRYPOINT": entrypoint,
            **control_env,
        }
    )
    # The worker's client checked the server's version when it started; Prefect's setting
    # for subprocesses that inherit that check (one request at each client's start).
    env.setdefault("PREFECT_CLIENT_SERVER_VERSION_CHECK_ENABLED", "false")
    return {k: v for k, v in sanitize_subprocess_env(env).items() if v is not None}


@dataclass
class ForkedRun:
    """A forked engine, as Prefect's ``ProcessHandle`` sees a process: pid and exit code."""

    pid: int
    returncode: int | None = None


class ForkStarter:
    """Prefect ``ProcessStarter``: fork the run's engine from the warm forkserver."""

    def __init__(
        self,
        forkserver: Forkserver,
        *,
        entrypoint: str,
        cwd: Path,
        env: Mapping[str, str | None],
        stream_output: bool,
        control_channel: ControlChannel | None,
        related: Mapping[str, Any] | None = None,
    ) -> None:
        self._forkserver = forkserver
        self._related = dict(related or {})
        self._entrypoint = entrypoint
        self._cwd = cwd
        self._env = env
        self._stream_output = stream_output
        self._control_channel = control_channel

    async def start(
        self,
        flow_run: FlowRun,
        task_status: anyio.abc.TaskStatus[ProcessHandle] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        control_env: dict[str, str] = {}
        if self._control_channel is not None:
            with contextlib.suppress(RuntimeError):  # the channel is optional (kill-only)
                port, token = self._control_channel.register(flow_run.id)
                control_env = {"PREFECT__CONTROL_PORT": str(port), "PREFECT__CONTROL_TOKEN": token}
        env = engine_environment(
            flow_run, self._env, entrypoint=self._entrypoint, control_env=control_env
        )
        request = {
            "flow_run_id": str(flow_run.id),
            "entrypoint": self._entrypoint,
            "env": env,
            "cwd": str(self._cwd),
            "stream_output": self._stream_output,
            "related": self._related,  # for the run's events (``related.seed``)
            # The run as the worker left it (Pending): the engine starts from it instead of
            # reading it first (it reads the run again itself, as Prefect's engine does,
            # before the flow begins, so the flow sees the server's current run).
            "flow_run": flow_run.model_dump(mode="json"),
        }
        sock = await self._forkserver.fork(request)
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=MAX_MESSAGE_BYTES)
        try:
            first = await _message(reader, _START_TIMEOUT_SECONDS)
            if first.get("event") != "started":
                raise ForkserverUnavailable(
                    f"the forkserver could not start the run: {first.get('message', first)}"
                )
            run = ForkedRun(pid=int(first["pid"]))
            task_status.started(
                ProcessHandle(run, termination_scope=_PosixProcessGroupTerminationScope())  # type: ignore[arg-type]
            )
            run.returncode = await _exit_code(reader, run.pid)
        finally:
            writer.close()


async def _message(reader: asyncio.StreamReader, timeout_seconds: float | None) -> dict[str, Any]:
    line = await asyncio.wait_for(reader.readline(), timeout_seconds)
    if not line:
        return {"event": "eof"}
    data: dict[str, Any] = json.loads(line)
    return data


async def _exit_code(reader: asyncio.StreamReader, pid: int) -> int:
    """The engine's exit code from its supervisor; when the supervisor itself is gone, wait
    for the engine and report it as crashed (its own final state, if any, stands)."""
    message = await _message(reader, None)
    if message.get("event") == "exited":
        return int(message["code"])
    logger.warning(
        "lost the supervisor of flow-run process %d (%s); waiting for the process itself",
        pid,
        message.get("message", message.get("event")),
    )
    while is_live(pid):  # a zombie is gone too
        await asyncio.sleep(0.5)
    return 1
