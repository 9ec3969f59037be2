"""The forkserver: a process with Prefect and the flow modules imported once, that forks each
flow run instead of starting a fresh interpreter (about 2 s saved per run, and the pages of
Prefect shared between runs).

Run as ``python -m claude_conductor.work_pools.forkserver --fd N --preload MODULES
[--records DIR]`` by the Conductor worker (``work_pools.forking``), never by hand. It talks to the worker over the
AF_UNIX SOCK_SEQPACKET socket ``N``, one JSON message per packet:

- forkserver -> worker: ``{"event": "files", "files"}`` (the source files of what it
  loaded, for the worker to notice a code change; several packets), then
  ``{"event": "ready", "pid", "threads", "errors"}`` once imported; ``{"event": "pong"}``.
- worker -> forkserver: ``{"op": "ping"}``; ``{"op": "run", ...}`` with one file descriptor
  attached (SCM_RIGHTS): the run's own stream socket, on which everything about that run is
  reported (``started`` with the engine's pid, then ``exited`` with its exit code, or
  ``error``). After the fork the run no longer depends on the forkserver or on the worker.

Each run is two processes forked from here:

- the **supervisor** (tiny; a child subreaper): forks the engine, records it in ``DIR``
  (``system.processes.record_process``: ``conductor down`` finds the engine there, since a
  non-dumpable process cannot be found by its environment), reports its pid, reaps, and when
  the engine has exited stops whatever the engine left behind (an agent orphaned by a killed
  engine is re-parented to the supervisor, not to init), drops the record, then reports the
  exit code.
- the **engine**: a new session (so the worker can signal its whole process group), the
  run's environment and working directory applied, then exactly what ``python -m
  prefect.engine`` does, except that the run's logs are sent before each final state it
  reports (``run_logs``); logs and events drained before ``os._exit``. Prefect's settings
  and logging, which a run builds from its environment, are built here in the forkserver
  before the fork, once per distinct environment (``settings_key``: the runs of a pool all
  share one), and inherited; an engine whose key differs builds its own. The engine watches
  for a suspension from outside as Prefect does, without waiting for that watch to be ready
  before the flow starts or to notice its end (``suspension``).

If the worker dies, the forkserver exits (its socket closes) and runs already forked finish on
their own and report their final state to the API themselves.

This process holds the API credential in its environment: it is made non-dumpable at start
(``system.hardening``), and so are the processes it forks.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import json
import logging
import os
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from claude_conductor.system.hardening import make_undumpable
from claude_conductor.system.processes import forget_process, is_live, record_process
from claude_conductor.system.temp_dirs import RUN_TEMP_TAG_ENV, new_run_tag, remove_run_temp_dirs
from claude_conductor.work_pools import related, suspension

__all__ = [
    "MAX_MESSAGE_BYTES",
    "PROCESS_NAMES",
    "SharedVerifiedContexts",
    "complete_models",
    "loaded_source_files",
    "main",
    "preload_modules",
    "run",
    "settings_key",
    "share_verified_tls_contexts",
    "warm_verified_tls_context",
]

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1 << 20
"""Largest control message (the run request carries the run's environment)."""
_LEFTOVER_GRACE_SECONDS = 3.0
_DRAIN_TIMEOUT_SECONDS = 10.0
_LOGS_BEFORE_FINAL_STATE_SECONDS = 15.0
_FILES_PER_PACKET = 200  # a packet must fit the socket's buffer
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_NAME = 15
PROCESS_NAMES = {"forkserver": "forkserver", "supervisor": "run-supervisor", "engine": "flow-run"}
"""The kernel's name (``comm``: what ``ps -o comm``, ``top`` and psutil's ``name()`` show)
of each role, so a forkserver forked from its worker is told apart from the worker."""


# -- helpers shared by the three roles ------------------------------------------------------


def _send(sock: socket.socket, message: dict[str, Any], *, packet: bool) -> None:
    data = json.dumps(message).encode()
    with contextlib.suppress(OSError):
        sock.sendall(data if packet else data + b"\n")


def loaded_source_files(modules: dict[str, Any] | None = None) -> list[str]:
    """The source files of the loaded modules outside the standard library: what a code
    change (an edit, a reinstall) touches."""
    stdlib = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix) if p}
    stdlib_dirs = tuple(os.path.join(p, "lib") for p in stdlib)
    site = ("site-packages", "dist-packages")
    files: set[str] = set()
    for module in list((modules if modules is not None else sys.modules).values()):
        path = getattr(module, "__file__", None)
        if not isinstance(path, str) or not path.endswith(".py"):
            continue
        real = os.path.realpath(path)
        if real.startswith(stdlib_dirs) and not any(s in real for s in site):
            continue
        files.add(real)
    return sorted(files)


def _prctl(option: int, value: int | bytes) -> None:
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(option, value, 0, 0, 0)


def _set_name(role: str) -> None:
    with contextlib.suppress(OSError):
        _prctl(_PR_SET_NAME, PROCESS_NAMES[role].encode()[:15])


def _children(pid: int) -> list[int]:
    """Live children of ``pid`` (zombies included: they still need reaping)."""
    found: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _reap_all() -> list[tuple[int, int]]:
    """Reap every exited child now; returns (pid, wait status) pairs."""
    reaped: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append((pid, status))


# -- the engine (grandchild) ---------------------------------------------------------------


_SETTINGS_FILES = (".env", "prefect.toml", "pyproject.toml")
"""Files in a run's working directory that Prefect's settings read."""


def settings_key(env: dict[str, str | None], cwd: str | None) -> str:
    """What Prefect's settings are built from: the ``PREFECT_`` variables (not the per-run
    ``PREFECT__`` ones), the settings files of the working directory and the profiles file.
    Runs with the same key have the same settings."""
    prefect = sorted(
        (k, v)
        for k, v in env.items()
        if k.startswith("PREFECT_") and not k.startswith("PREFECT__") and v is not None
    )
    home = env.get("PREFECT_HOME") or os.path.join(os.path.expanduser("~"), ".prefect")
    profiles = env.get("PREFECT_PROFILES_PATH") or os.path.join(home, "profiles.toml")
    paths = [profiles, *(os.path.join(cwd or os.getcwd(), n) for n in _SETTINGS_FILES)]
    files: list[Any] = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            continue  # a file that is not there changes nothing, whatever the folder
        files.append([path, stat.st_mtime_ns, stat.st_size])
    return json.dumps([prefect, files])


_built_settings_key: str | None = None
"""The ``settings_key`` Prefect's settings and logging were last built for in this process."""


def _build_settings(env: dict[str, str | None], cwd: str | None) -> None:
    """Rebuild Prefect's settings and logging from ``env`` (in ``cwd``); in the forkserver
    (once per distinct key, then every run forked with that key inherits them) or in an
    engine whose key was not built."""
    global _built_settings_key
    import prefect.context
    from prefect.logging.configuration import setup_logging

    key = settings_key(env, cwd)
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    _built_settings_key = None
    try:
        os.environ.clear()
        os.environ.update({k: v for k, v in env.items() if v is not None})
        if cwd:
            os.chdir(cwd)
        prefect.context.refresh_global_settings_context()
        setup_logging(incremental=False)
        warm_verified_tls_context()
        _built_settings_key = key
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        with contextlib.suppress(OSError):
            os.chdir(saved_cwd)


def _prepare_settings(request: dict[str, Any]) -> None:
    """In the forkserver, before forking a run: build Prefect's settings for the run's
    environment unless they are built already (about a quarter of a second of an engine's
    CPU otherwise: runs of one pool share one key). A failure is left to the engine, which
    builds them itself and reports the error on the run."""
    try:
        if settings_key(request["env"], request.get("cwd")) != _built_settings_key:
            _build_settings(request["env"], request.get("cwd"))
            gc.collect()
            gc.freeze()  # as at start: runs leave these pages shared
    except Exception as exc:
        print(f"conductor forkserver: Prefect settings not prebuilt: {exc!r}", file=sys.stderr)


def _apply_environment(request: dict[str, Any]) -> None:
    env = {k: v for k, v in request["env"].items() if v is not None}
    cwd = request.get("cwd")
    if settings_key(env, cwd) != _built_settings_key:
        # Settings and logging were built from another environment (the forkserver's own).
        _build_settings(env, cwd)
    os.environ.clear()
    os.environ.update(env)
    if cwd:
        os.chdir(cwd)
    if not request.get("stream_output", True):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)


def _handed_flow_run(request: dict[str, Any]) -> Any:
    """The flow run the worker handed over (as it left it, Pending), None when it did not
    or it does not parse (then the engine reads it, as Prefect's does)."""
    data = request.get("flow_run")
    if not isinstance(data, dict) or data.get("id") != request["flow_run_id"]:
        return None
    from prefect.client.schemas.objects import FlowRun

    try:
        return FlowRun.model_validate(data)
    except ValueError:
        return None


def _run_engine(request: dict[str, Any]) -> int:
    """What ``python -m prefect.engine`` does, in this already warm interpreter."""
    from uuid import UUID

    _apply_environment(request)
    from prefect._internal.control_listener import configure_from_env
    from prefect.engine import _drive_run_flow_result, handle_engine_signals
    from prefect.flow_engine import _load_flow_from_runtime_entrypoint, load_flow_run, run_flow
    from prefect.logging.loggers import flow_run_logger

    from claude_conductor.work_pools.run_logs import send_logs_before_final_states

    flow_run_id = UUID(request["flow_run_id"])
    related.seed(request.get("related"))
    configure_from_env()
    try:
        with handle_engine_signals(flow_run_id):
            from prefect._internal.metrics import RunMetrics

            flow_run = _handed_flow_run(request) or load_flow_run(flow_run_id=flow_run_id)
            run_logger = flow_run_logger(flow_run=flow_run)
            try:
                flow = _load_flow_from_runtime_entrypoint(request["entrypoint"])
            except Exception:
                run_logger.error(
                    "Unexpected exception encountered when trying to load flow", exc_info=True
                )
                raise
            with (
                RunMetrics(flow_run, flow),
                send_logs_before_final_states(_LOGS_BEFORE_FINAL_STATE_SECONDS),
            ):
                result = run_flow(flow, flow_run=flow_run, error_logger=run_logger)  # type: ignore[arg-type]
                _drive_run_flow_result(flow, result)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except BaseException:
        return 1
    return 0


def _engine_main(request: dict[str, Any], close_fds: tuple[int, ...]) -> None:
    """The engine process: never returns."""
    code = 1
    try:
        os.setsid()
        _set_name("engine")
        make_undumpable()  # inherited from the forkserver; stated here, where it matters
        for fd in close_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        code = _run_engine(request)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            print(f"conductor forkserver: the engine failed to start: {exc!r}", file=sys.stderr)
    finally:
        with contextlib.suppress(BaseException):
            from claude_conductor.work_pools.run_logs import drain_at_exit

            drain_at_exit(_DRAIN_TIMEOUT_SECONDS)
        os._exit(code)


# -- the supervisor (child) ----------------------------------------------------------------


def _stop_leftovers(me: int) -> None:
    """Stop what the engine left behind (re-parented to us): TERM each one's process group
    and itself, then KILL after a grace period; repeat until nothing is left."""
    for _ in range(20):
        _reap_all()
        left = [p for p in _children(me) if is_live(p)]
        if not left:
            return
        for signum in (signal.SIGTERM, signal.SIGKILL):
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    if os.getpgid(pid) == pid:
                        os.killpg(pid, signum)
                    os.kill(pid, signum)
            deadline = time.monotonic() + (
                _LEFTOVER_GRACE_SECONDS if signum == signal.SIGTERM else 2
            )
            while time.monotonic() < deadline:
                _reap_all()
                left = [p for p in _children(me) if is_live(p)]
                if not left:
                    break
                time.sleep(0.05)
            if not left:
                break


def _record(records: Path | None, engine: int, flow_run_id: str) -> None:
    if records is None:
        return
    try:
        record_process(records, engine, label=f"flow run {flow_run_id}")
    except (OSError, ValueError) as exc:  # the run goes on; only `down` may miss it
        print(f"conductor forkserver: could not record process {engine}: {exc}", file=sys.stderr)


def _supervisor_main(
    request: dict[str, Any], run_sock: socket.socket, control_fd: int, records: Path | None
) -> None:
    """The supervisor process: never returns."""
    try:
        os.close(control_fd)
        _set_name("supervisor")
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)
        temp_tag = new_run_tag()  # the engine's agents' temp folders carry it
        request["env"] = {**request["env"], RUN_TEMP_TAG_ENV: temp_tag}
        engine = os.fork()
        if engine == 0:
            _engine_main(request, close_fds=(run_sock.fileno(),))
        _record(records, engine, str(request.get("flow_run_id")))
        _send(run_sock, {"event": "started", "pid": engine}, packet=False)

        def forward(signum: int, _frame: Any) -> None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(engine, signum)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        status: int | None = None
        while status is None:
            try:
                pid, wait_status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if pid == engine:
                status = wait_status
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop_leftovers(os.getpid())
        remove_run_temp_dirs(temp_tag)  # what a killed engine could not remove
        if records is not None:
            with contextlib.suppress(OSError):
                forget_process(records, engine)
        code = os.waitstatus_to_exitcode(status) if status is not None else 1
        _send(run_sock, {"event": "exited", "code": code}, packet=False)
    except BaseException as exc:
        _send(run_sock, {"event": "error", "message": repr(exc)}, packet=False)
    finally:
        os._exit(0)


# -- the forkserver ------------------------------------------------------------------------


def preload_modules(modules: list[str]) -> list[str]:
    """Import ``modules``; returns one line per module that failed."""
    errors: list[str] = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    return errors


class SharedVerifiedContexts:
    """Stands in for the ``ssl`` module inside Prefect's client modules (``_TLS_USERS``), and
    only there: a verified TLS context for a CA file is built once (in the forkserver, before
    any fork) and shared by every Prefect client of every run. Prefect builds one per client
    and per version check, even for an ``http://`` API: loading the CA bundle costs about
    20 ms of CPU, and a run makes four of them. Anything else (an unverified context, which
    Prefect then changes; any other use of ``ssl``) goes to the real module unchanged."""

    def __init__(self, module: Any) -> None:
        self._ssl = module
        self._contexts: dict[tuple[str, int, int], Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ssl, name)

    def create_default_context(
        self,
        purpose: Any = None,
        *,
        cafile: str | None = None,
        capath: str | None = None,
        cadata: Any = None,
    ) -> Any:
        purpose = self._ssl.Purpose.SERVER_AUTH if purpose is None else purpose
        if cafile is None or capath is not None or cadata is not None:
            return self._ssl.create_default_context(
                purpose, cafile=cafile, capath=capath, cadata=cadata
            )
        try:
            stat = os.stat(cafile)
        except OSError:  # let ssl say what is wrong with it
            return self._ssl.create_default_context(purpose, cafile=cafile)
        key = (f"{purpose}:{cafile}", stat.st_mtime_ns, stat.st_size)
        if key not in self._contexts:
            self._contexts[key] = self._ssl.create_default_context(purpose, cafile=cafile)
        return self._contexts[key]


_TLS_USERS = (
    "prefect.client.orchestration",  # the API clients
    "prefect._internal.version_checking",  # the events and logs clients' version check
    "prefect._internal.websockets",  # their wss:// connections
)
"""The modules of Prefect that build a verified TLS context per client or per check."""


def share_verified_tls_contexts() -> None:
    """Make Prefect's clients share verified TLS contexts (``SharedVerifiedContexts``) in every
    module of ``_TLS_USERS`` that is loaded and has ``ssl`` of its own, the default context
    built now so forked runs inherit it. Only the API clients' module is required: without it
    nothing is replaced."""
    import ssl

    modules = [sys.modules.get(name) for name in _TLS_USERS]
    if modules[0] is None or getattr(modules[0], "ssl", None) is not ssl:
        return
    shared = SharedVerifiedContexts(ssl)
    for module in modules:
        if module is not None and getattr(module, "ssl", None) is ssl:
            module.ssl = shared  # type: ignore[attr-defined]
    warm_verified_tls_context()


def warm_verified_tls_context() -> None:
    """Build the verified context Prefect's clients will ask for under the current settings
    (``PREFECT_API_SSL_CERT_FILE``, which follows ``SSL_CERT_FILE``, or certifi's bundle), so
    runs forked after this share it."""
    shared = getattr(sys.modules.get("prefect.client.orchestration"), "ssl", None)
    if not isinstance(shared, SharedVerifiedContexts):
        return
    with contextlib.suppress(Exception):
        import certifi
        from prefect.settings import get_current_settings

        cafile = get_current_settings().api.ssl_cert_file or certifi.where()
        shared.create_default_context(cafile=cafile)


def complete_models() -> int:
    """Build now the validators of every loaded pydantic model that defers it to first use
    (most of Prefect's client schemas): otherwise every forked run builds the same ones again.
    Returns how many were built."""
    try:
        from pydantic import BaseModel
    except ImportError:  # pragma: no cover - a dependency
        return 0
    built, stack, seen = 0, [BaseModel], set()
    while stack:
        for cls in stack.pop().__subclasses__():
            if cls in seen:
                continue
            seen.add(cls)
            stack.append(cls)
            if cls.__dict__.get("__pydantic_complete__", True):
                continue
            with contextlib.suppress(Exception):  # one that cannot be built yet stays lazy
                if cls.model_rebuild(raise_errors=False):
                    built += 1
    return built


def _messages(sock: socket.socket) -> Iterator[tuple[dict[str, Any] | None, list[int]]]:
    """Packets from the worker (None at EOF), with the descriptors attached to each."""
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE_BYTES, 4)
        except InterruptedError:
            continue
        except BlockingIOError:
            return
        if not data:
            for fd in fds:
                os.close(fd)
            yield None, []
            return
        try:
            yield json.loads(data), list(fds)
        except ValueError:
            for fd in fds:
                os.close(fd)


def _fork_run(request: dict[str, Any], fd: int, control_fd: int, records: Path | None) -> None:
    run_sock = socket.socket(fileno=fd)
    try:
        pid = os.fork()
    except OSError as exc:
        _send(run_sock, {"event": "error", "message": f"fork failed: {exc}"}, packet=False)
        run_sock.close()
        return
    if pid == 0:
        _supervisor_main(request, run_sock, control_fd, records)
    run_sock.close()


def serve(control: socket.socket, preload: list[str], records: Path | None = None) -> int:
    errors = preload_modules(preload)
    share_verified_tls_contexts()
    suspension.install()
    complete_models()
    gc.collect()
    gc.freeze()  # forked runs then leave these objects' pages shared
    files = loaded_source_files()
    for start in range(0, len(files), _FILES_PER_PACKET):
        _send(
            control,
            {"event": "files", "files": files[start : start + _FILES_PER_PACKET]},
            packet=True,
        )
    _send(
        control,
        {
            "event": "ready",
            "pid": os.getpid(),
            "threads": threading.active_count(),
            "errors": errors,
        },
        packet=True,
    )
    control.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    while True:
        ready = selector.select(timeout=1.0)
        _reap_all()
        if not ready:
            continue
        for message, fds in _messages(control):
            if message is None:
                return 0  # the worker is gone: runs already forked finish on their own
            op = message.get("op")
            if op == "ping":
                _send(control, {"event": "pong"}, packet=True)
            elif op == "run" and fds:
                _prepare_settings(message)
                _fork_run(message, fds[0], control.fileno(), records)
                for extra in fds[1:]:
                    os.close(extra)
            elif op == "stop":
                return 0
            else:
                for fd in fds:
                    os.close(fd)


def run(control: socket.socket, preload: list[str], records: Path | None) -> int:
    """Be the forkserver on ``control`` (a fresh process, or one just forked by its worker
    before the worker started any thread: ``forking.prefork``)."""
    make_undumpable()
    _set_name("forkserver")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the worker's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return serve(control, preload, records)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="conductor-forkserver")
    parser.add_argument("--fd", type=int, required=True, help="the worker's control socket")
    parser.add_argument("--preload", default="", help="comma-separated modules to import")
    parser.add_argument("--records", type=Path, default=None, help="where engines are recorded")
    args = parser.parse_args(argv)
    control = socket.socket(fileno=args.fd)
    return run(control, [m for m in args.preload.split(",") if m], args.records)


if __name__ == "__main__":
    sys.exit(main())
