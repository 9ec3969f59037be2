"""Long-running processes ("daemons") managed by PID file: start detached, find, stop.

Each daemon runs in its own session (so its whole process group can be signalled), writes
stdout and stderr to ``<logs_dir>/<name>.log`` and is recorded in ``<run_dir>/<name>.pid`` as
JSON: the PID plus the process start time (/proc/<pid>/stat), so a PID the kernel has
recycled for some other program is never mistaken for ours (or signalled).

Processes that are not daemons but must still be found later (a flow run's engine, forked by
the worker's forkserver) are recorded the same way, one JSON file each in a records folder
(``record_process``, ``recorded_processes``): a process made non-dumpable
(``system.hardening``) hides its ``/proc/<pid>/environ`` from a non-root user, so it cannot be
found by its environment; its record, its start time and the process tree (``/proc/<pid>/stat``
stays readable) find it and everything it started.

The one owner of process plumbing: process scans (``processes_with_env``, ``group_members``,
``descendants``), PID-reuse checks (``pid_alive``) and group kill with TERM -> KILL escalation
(``terminate_processes``), on psutil; agents, workspaces and tiers use these. Linux (process
groups and sessions), like the tiers that use it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from claude_conductor.errors import ConductorError, DaemonError
from claude_conductor.settings import ConductorSettings

if TYPE_CHECKING:
    import psutil

__all__ = [
    "Daemon",
    "DaemonError",
    "ProcessRecord",
    "descendants",
    "find_processes_with_env",
    "forget_process",
    "group_members",
    "http_ok",
    "is_live",
    "is_running",
    "locked",
    "log_tail",
    "pid_alive",
    "pid_file_names",
    "process_group",
    "process_start_ticks",
    "processes_with_env",
    "read_daemon",
    "read_environ",
    "record_process",
    "recorded_processes",
    "start_daemon",
    "stop_daemon",
    "terminate_processes",
    "wait_for_health",
]

logger = logging.getLogger(__name__)

_LOG_ROTATE_BYTES = 20 * 1024 * 1024
_SECOND_SIGTERM_AFTER_SECONDS = 1.0
_AFTER_KILL_WAIT_SECONDS = 5.0
_POLL_SECONDS = 0.05
_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Daemon(BaseModel):
    """What a PID file records about one started daemon."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str = Field(description="Short name; names the PID file and the log.")
    pid: int = Field(description="Process id of the session leader.")
    start_ticks: int = Field(
        description="Start time of the process in clock ticks since boot (/proc/<pid>/stat "
        "field 22); tells our process apart from a later one that reuses the PID."
    )
    argv: list[str] = Field(description="The command that was started.")
    log_path: Path = Field(description="Where its stdout and stderr go.")
    started_at: datetime = Field(description="When it was started (UTC).")

    @property
    def alive(self) -> bool:
        return pid_alive(self.pid, self.start_ticks)


# -- processes ---------------------------------------------------------------------------
# One process's liveness and start time come from /proc/<pid>/stat (what psutil reads too);
# psutil, imported where it is used, scans and walks the process table. ``conductor status``
# (PID files, liveness) so imports no psutil.

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_GONE_STATES = ("Z", "X")  # zombie, dead


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """``pid``'s state letter and start time (clock ticks since boot, field 22) from
    /proc/<pid>/stat; None when there is no such process."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or parentheses.
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return fields[0].decode(), int(fields[19])
    except (IndexError, ValueError):
        return None


def _process(pid: int) -> psutil.Process | None:
    import psutil

    try:
        return psutil.Process(pid)
    except (psutil.Error, ValueError):
        return None


def _running(proc: psutil.Process) -> bool:
    return is_live(proc.pid)


def process_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (/proc/<pid>/stat field 22, psutil's
    ``create_time`` in that unit); None when there is no such process."""
    stat = _proc_stat(pid)
    return None if stat is None else stat[1]


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child (so it does not linger as a zombie)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def pid_alive(pid: int, start_ticks: int | None = None) -> bool:
    """Whether ``pid`` runs (zombies do not count) and, if given, started at ``start_ticks``
    (so a PID the kernel recycled for another program is not taken for ours)."""
    _reap(pid)
    if not is_live(pid):
        return False
    return start_ticks is None or process_start_ticks(pid) == start_ticks


def is_live(pid: int) -> bool:
    """Whether ``pid`` runs (zombies do not count). Unlike ``pid_alive`` it never reaps, so
    it is safe on children that asyncio waits for."""
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in _GONE_STATES


def _own_lineage() -> set[int]:
    """This process and its ancestors: never ours to kill."""
    import psutil

    me = psutil.Process()
    try:
        return {me.pid, *(p.pid for p in me.parents())}
    except psutil.Error:
        return {me.pid}


def read_environ(pid: int) -> dict[str, str]:
    """The environment ``pid`` was started with ({} when it cannot be read)."""
    import psutil

    proc = _process(pid)
    if proc is None:
        return {}
    try:
        return dict(proc.environ())
    except psutil.Error:
        return {}


def processes_with_env(key: str, value: str, *, skip: Iterable[int] = ()) -> list[int]:
    """Live PIDs (``skip`` left out) whose environment holds exactly ``key=value``;
    processes we may not inspect are skipped."""
    import psutil

    left_out = set(skip)
    found: list[int] = []
    for proc in psutil.process_iter():
        if proc.pid in left_out:
            continue
        try:
            matches = proc.environ().get(key) == value
        except psutil.Error:
            continue
        if matches and _running(proc):
            found.append(proc.pid)
    return sorted(found)


def find_processes_with_env(key: str, value: str) -> list[int]:
    """PIDs whose environment holds exactly ``key=value`` (this process and its ancestors
    excluded; processes we may not inspect are skipped)."""
    return processes_with_env(key, value, skip=_own_lineage())


def descendants(pid: int) -> list[int]:
    """Live (non-zombie) descendants of ``pid``, from the process tree alone (no environment
    is read, so it works on non-dumpable processes of the same user)."""
    import psutil

    proc = _process(pid)
    if proc is None:
        return []
    try:
        children = proc.children(recursive=True)
    except psutil.Error:
        return []
    return sorted(c.pid for c in children if _running(c))


def process_group(pid: int) -> int | None:
    """The process group of ``pid``; None when it is gone."""
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) PIDs in process group ``pgid``."""
    if pgid > 0:
        try:
            os.killpg(pgid, 0)  # no such group, the common case at a task's end: no scan
        except ProcessLookupError:
            return []
        except OSError:
            pass  # another user's group: look
    import psutil

    members: list[int] = []
    for proc in psutil.process_iter():
        if process_group(proc.pid) == pgid and _running(proc):
            members.append(proc.pid)
    return members


# -- signalling ------------------------------------------------------------------------


def _signal_group_or_pid(pid: int, sig: signal.Signals) -> None:
    """Signal the process group led by ``pid`` (our daemons lead their own), else ``pid``."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
            return
    except ProcessLookupError:
        # The leader is gone; members of its group may remain.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _group_members(pgid: int) -> list[int]:
    return group_members(pgid)


def _wait_gone(check: Callable[[], bool], timeout_seconds: float) -> bool:
    """Poll ``check`` (True = still there) until False or the timeout; True when gone."""
    deadline = time.monotonic() + timeout_seconds
    while check():
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_SECONDS)
    return True


def terminate_processes(pids: Iterable[tuple[int, int | None]], grace_seconds: float) -> list[int]:
    """Stop processes given as ``(pid, start_ticks)``: SIGTERM to each one's group, again after
    a second, SIGKILL after ``grace_seconds``; wait until they are gone. Returns the PIDs that
    were running when called. Processes whose start time no longer matches are left alone."""
    targets = [(pid, ticks) for pid, ticks in pids if pid_alive(pid, ticks)]
    if not targets:
        return []

    def alive() -> list[tuple[int, int | None]]:
        return [(p, t) for p, t in targets if pid_alive(p, t)]

    def groups_alive() -> bool:
        return bool(alive()) or any(_group_members(p) for p, _ in targets)

    for pid, _ in targets:
        _signal_group_or_pid(pid, signal.SIGTERM)
    second = min(_SECOND_SIGTERM_AFTER_SECONDS, grace_seconds / 2)
    if not _wait_gone(groups_alive, second):
        # An idle `prefect worker start` may ignore the first SIGTERM (see shared/FACTS.md).
        for pid, _ in alive():
            _signal_group_or_pid(pid, signal.SIGTERM)
        _wait_gone(groups_alive, max(0.0, grace_seconds - second))
    if groups_alive():
        for pid, _ in targets:
            logger.warning("process %d did not stop within %.0fs: killing it", pid, grace_seconds)
            _signal_group_or_pid(pid, signal.SIGKILL)
        if not _wait_gone(groups_alive, _AFTER_KILL_WAIT_SECONDS):
            left = [p for p, _ in alive()]
            raise ConductorError(f"processes {left!r} survived SIGKILL; check them with `ps`")
    return [pid for pid, _ in targets]


# -- records of processes that are not daemons -------------------------------------------


class ProcessRecord(BaseModel):
    """One recorded process (``<folder>/<pid>.json``), e.g. a forked flow run's engine."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    pid: int = Field(description="Process id.")
    start_ticks: int = Field(
        description="Start time in clock ticks since boot: a reused PID is not taken for it."
    )
    label: str = Field(default="", description="What it is (e.g. the flow run it runs).")

    @property
    def alive(self) -> bool:
        return pid_alive(self.pid, self.start_ticks)


def record_process(folder: Path, pid: int, label: str = "") -> Path | None:
    """Record ``pid`` (with its start time) in ``folder``; None when it is already gone.
    Written atomically, readable by the same user only."""
    ticks = process_start_ticks(pid)
    if ticks is None:
        return None
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    record = ProcessRecord(pid=pid, start_ticks=ticks, label=label)
    path = folder / f"{pid}.json"
    tmp = folder / f".{pid}.json.tmp"
    tmp.write_text(record.model_dump_json() + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def forget_process(folder: Path, pid: int) -> None:
    """Remove ``pid``'s record (it has ended)."""
    (folder / f"{pid}.json").unlink(missing_ok=True)


def recorded_processes(folder: Path) -> list[ProcessRecord]:
    """The recorded processes of ``folder`` that still run (same PID and start time); the
    records of those that ended are removed."""
    if not folder.is_dir():
        return []
    live: list[ProcessRecord] = []
    for path in sorted(folder.glob("*.json")):
        try:
            record = ProcessRecord.model_validate_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue  # ended and forgotten meanwhile
        except (OSError, ValidationError, ValueError) as exc:
            logger.warning("ignoring unreadable process record %s: %s", path, exc)
            continue
        if record.alive:
            live.append(record)
        else:
            path.unlink(missing_ok=True)
    return live


# -- PID files ---------------------------------------------------------------------------


def _pid_path(settings: ConductorSettings, name: str) -> Path:
    return settings.run_dir / f"{name}.pid"


def read_daemon(settings: ConductorSettings, name: str) -> Daemon | None:
    """The recorded daemon ``name``, running or not; None when there is no (readable) record."""
    path = _pid_path(settings, name)
    try:
        return Daemon.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValidationError, ValueError) as exc:
        logger.warning("ignoring unreadable PID file %s: %s", path, exc)
        return None


def is_running(settings: ConductorSettings, name: str) -> bool:
    daemon = read_daemon(settings, name)
    return daemon is not None and daemon.alive


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def _open_log(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        if path.stat().st_size > _LOG_ROTATE_BYTES:
            path.replace(path.with_suffix(path.suffix + ".1"))
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


def start_daemon(
    settings: ConductorSettings,
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
) -> Daemon:
    """Start ``argv`` detached in its own session and record it. Refuses to start a second
    copy of a daemon that is still running."""
    existing = read_daemon(settings, name)
    if existing is not None and existing.alive:
        raise DaemonError(f"{name} is already running (pid {existing.pid})", name=name)
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.logs_dir / f"{name}.log"
    log_fd = _open_log(log_path)
    try:
        os.write(log_fd, f"\n=== {datetime.now(UTC).isoformat()} starting {name}\n".encode())
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd or settings.home,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        raise DaemonError(f"could not start {name} ({argv[0]!r}): {exc}", name=name) from exc
    finally:
        os.close(log_fd)
    ticks = process_start_ticks(proc.pid)
    if ticks is None:  # exited already; keep the record so the caller can report its log
        ticks = -1
    daemon = Daemon(
        name=name,
        pid=proc.pid,
        start_ticks=ticks,
        argv=list(argv),
        log_path=log_path,
        started_at=datetime.now(UTC),
    )
    tmp = _pid_path(settings, name).with_suffix(".pid.tmp")
    tmp.write_text(daemon.model_dump_json(indent=2) + "\n", encoding="utf-8")
    tmp.replace(_pid_path(settings, name))
    logger.info("started %s (pid %d): %s", name, proc.pid, " ".join(argv))
    return daemon


def stop_daemon(
    settings: ConductorSettings, name: str, grace_seconds: float = 10.0
) -> Daemon | None:
    """Stop daemon ``name`` and its process group (SIGTERM, again, then SIGKILL after
    ``grace_seconds``), wait until it is gone and remove its PID file. Returns the daemon if it
    was running, None if there was nothing to stop (a stale PID file is removed)."""
    daemon = read_daemon(settings, name)
    if daemon is None:
        return None
    stopped = terminate_processes([(daemon.pid, daemon.start_ticks)], grace_seconds)
    _pid_path(settings, name).unlink(missing_ok=True)
    if stopped:
        logger.info("stopped %s (pid %d)", name, daemon.pid)
        return daemon
    return None


@contextlib.contextmanager
def locked(settings: ConductorSettings, timeout_seconds: float = 300.0) -> Iterator[None]:
    """Hold ``<run_dir>/stack.lock``: one ``up``/``down``/scale at a time per home."""
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    path = settings.run_dir / "stack.lock"
    import filelock

    lock = filelock.FileLock(
        path,
        timeout=timeout_seconds,
        thread_local=False,
        poll_interval=0.1,
        preserve_lock_file=True,
    )
    try:
        lock.acquire()
    except filelock.Timeout:
        raise ConductorError(
            f"another conductor command holds {path} for over {timeout_seconds:.0f}s; "
            "wait for it, or check `ps`"
        ) from None
    try:
        yield
    finally:
        lock.release()


# -- health ----------------------------------------------------------------------------


def http_ok(url: str, timeout_seconds: float = 2.0) -> bool:
    """Whether a GET of ``url`` answers 2xx within the timeout (never through a proxy: the
    URLs checked here are loopback)."""
    try:
        with _NO_PROXY_OPENER.open(url, timeout=timeout_seconds) as response:
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_for_health(
    url: str,
    timeout_seconds: float,
    *,
    alive: Callable[[], bool] | None = None,
    interval_seconds: float = 0.2,
) -> bool:
    """Poll ``url`` until it answers 2xx (True), the overall timeout passes, or ``alive`` says
    the process that should answer has died (False)."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        remaining = deadline - time.monotonic()
        if http_ok(url, timeout_seconds=max(0.2, min(2.0, remaining))):
            return True
        if alive is not None and not alive():
            return False
        if time.monotonic() + interval_seconds >= deadline:
            return False
        time.sleep(interval_seconds)


def pid_file_names(settings: ConductorSettings) -> list[str]:
    """Names of every daemon with a PID file under the run dir."""
    if not settings.run_dir.is_dir():
        return []
    return sorted(p.stem for p in settings.run_dir.glob("*.pid"))
