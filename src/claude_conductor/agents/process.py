"""Child processes in their own process group, and stopping all of them for sure.

Every child (the ``claude`` CLI, a verify command) starts a new session, so it and what it
spawns share one process group whose id is the child's pid. Some descendants leave that
group: the CLI runs each Bash tool command in a session of its own. So a child is also given
a marker variable in its environment (``CONDUCTOR_PROCESS_MARK``), which its descendants
inherit, and ``stop_group`` stops the group *and* every process carrying the marker, even
ones reparented after their parent died.

``stop_group`` sends SIGTERM, waits a grace period, then SIGKILLs what is left. It runs
shielded, so a cancellation of the caller cannot skip it, and every wait in it is bounded.
(After Prefect's ``utilities/processutils.open_process``.) Groups not stopped yet are kept in
a registry: ``kill_registered_groups`` stops them all synchronously, for crash and
cancellation hooks, and runs at interpreter exit as a last resort.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from claude_conductor.system import processes

__all__ = [
    "MARK_VARIABLE",
    "group_alive",
    "group_members",
    "kill_registered_groups",
    "marked_processes",
    "new_mark",
    "registered_groups",
    "run_shielded",
    "spawn",
    "stop_group",
    "wait_exit",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

MARK_VARIABLE = "CONDUCTOR_PROCESS_MARK"
"""Environment variable that tags a child and its descendants for cleanup."""

_POLL_SECONDS = 0.05
_REAP_SECONDS = 5.0

# pgid -> mark of every group spawned by this process and not stopped yet.
_REGISTRY: dict[int, str | None] = {}
_REGISTRY_LOCK = threading.Lock()


def _forget_parent_groups() -> None:
    """In a forked child: the parent's groups are not ours to kill."""
    global _REGISTRY_LOCK
    _REGISTRY_LOCK = threading.Lock()
    _REGISTRY.clear()


os.register_at_fork(after_in_child=_forget_parent_groups)


def new_mark() -> str:
    """A fresh marker value for one child."""
    return secrets.token_hex(12)


async def spawn(
    argv: Sequence[str],
    *,
    cwd: Path | str,
    env: Mapping[str, str] | None = None,
    mark: str | None = None,
    stdin: int | None = asyncio.subprocess.DEVNULL,
    stdout: int | None = asyncio.subprocess.PIPE,
    stderr: int | None = asyncio.subprocess.PIPE,
    line_limit_bytes: int = 64 * 1024,
) -> asyncio.subprocess.Process:
    """Start ``argv`` (a list, never a shell string) as the leader of a new process group.

    ``mark`` (see ``new_mark``) is put in the environment for ``stop_group`` to find the
    child's descendants. ``line_limit_bytes`` is the longest line ``stdout.readline()`` reads.
    """
    if isinstance(argv, str):
        raise TypeError("spawn() takes an argv list, not a shell string")
    child_env = dict(os.environ if env is None else env)
    if mark:
        child_env[MARK_VARIABLE] = mark
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=str(cwd),
        env=child_env,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        limit=line_limit_bytes,
        start_new_session=True,
    )
    with _REGISTRY_LOCK:
        _REGISTRY[process.pid] = mark
    return process


async def wait_exit(process: asyncio.subprocess.Process, timeout_seconds: float) -> int | None:
    """The exit code once the process has exited, or None after ``timeout_seconds``.

    Unlike ``process.wait()`` (which, on Python 3.11, also waits for the output pipes to
    close), this returns as soon as the process itself exits, even when a background child
    still holds its stdout.
    """
    deadline = time.monotonic() + timeout_seconds
    while process.returncode is None:
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(_POLL_SECONDS)
    return process.returncode


def _alive(pid: int) -> bool:
    return processes.is_live(pid)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids in process group ``pgid``."""
    return processes.group_members(pgid)


def group_alive(pgid: int) -> bool:
    """Whether any live process is left in group ``pgid``."""
    return bool(group_members(pgid))


def marked_processes(mark: str) -> list[int]:
    """Live pids whose environment carries ``CONDUCTOR_PROCESS_MARK=mark``."""
    return processes.processes_with_env(MARK_VARIABLE, mark)


def _signal(pgid: int, pids: set[int], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            # A marked process leading its own group (a Bash tool command): the whole group.
            if processes.process_group(pid) == pid:
                os.killpg(pid, signum)
            else:
                os.kill(pid, signum)


def _targets(pgid: int, mark: str | None) -> set[int]:
    return set(group_members(pgid)) | (set(marked_processes(mark)) if mark else set())


async def _wait_gone(
    process: asyncio.subprocess.Process, pgid: int, pids: set[int], timeout_seconds: float
) -> bool:
    deadline = time.monotonic() + timeout_seconds
    while True:
        if (
            process.returncode is not None
            and not group_alive(pgid)
            and not any(_alive(pid) for pid in pids)
        ):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(_POLL_SECONDS)


async def _stop(
    process: asyncio.subprocess.Process, grace_seconds: float, mark: str | None
) -> bool:
    pgid = process.pid
    leader_running = process.returncode is None
    targets = _targets(pgid, mark)
    if not leader_running and not targets:
        return False
    logger.debug("stopping process group %d and %d marked processes", pgid, len(targets))
    _signal(pgid, targets, signal.SIGTERM)
    if await _wait_gone(process, pgid, targets, grace_seconds):
        return leader_running
    targets |= _targets(pgid, mark)
    logger.info("processes of group %d outlived SIGTERM by %.1fs: SIGKILL", pgid, grace_seconds)
    _signal(pgid, targets, signal.SIGKILL)
    if not await _wait_gone(process, pgid, targets, _REAP_SECONDS):
        left = sorted(_targets(pgid, mark))
        logger.warning("processes %s of group %d are still alive after SIGKILL", left, pgid)
    return leader_running


async def run_shielded(awaitable: Awaitable[T]) -> T:
    """Run ``awaitable`` to completion even if the caller is cancelled meanwhile; the
    cancellation is re-raised afterwards."""
    task = asyncio.ensure_future(awaitable)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
            break
        except asyncio.CancelledError:
            if task.done():
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return result


async def stop_group(
    process: asyncio.subprocess.Process, *, grace_seconds: float, mark: str | None = None
) -> bool:
    """SIGTERM the process's group (and every process marked ``mark``), SIGKILL what is left
    after ``grace_seconds``; shielded from cancellation, every wait bounded.

    Also cleans up after a leader that already exited (children it left behind). Returns
    True when the leader itself was still running, i.e. it was stopped by us.
    """
    try:
        return await run_shielded(_stop(process, grace_seconds, mark))
    finally:
        with _REGISTRY_LOCK:
            _REGISTRY.pop(process.pid, None)


def registered_groups() -> dict[int, str | None]:
    """``{pgid: mark}`` of the groups this process spawned and has not stopped yet."""
    with _REGISTRY_LOCK:
        return dict(_REGISTRY)


def kill_registered_groups(grace_seconds: float = 2.0) -> int:
    """Stop every group this process spawned and has not stopped yet, with their marked
    descendants: SIGTERM, up to ``grace_seconds``, then SIGKILL. Synchronous and bounded,
    for Prefect's ``on_cancellation``/``on_crashed`` hooks. Returns how many groups."""
    with _REGISTRY_LOCK:
        entries = dict(_REGISTRY)
        _REGISTRY.clear()
    if not entries:
        return 0
    logger.info("stopping %d agent process groups: %s", len(entries), sorted(entries))
    for signum, wait_seconds in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, _REAP_SECONDS)):
        targets: dict[int, set[int]] = {
            pgid: set(marked_processes(mark)) if mark else set() for pgid, mark in entries.items()
        }
        for pgid, pids in targets.items():
            _signal(pgid, pids, signum)
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            if not any(
                group_alive(pgid) or any(map(_alive, pids)) for pgid, pids in targets.items()
            ):
                return len(entries)
            time.sleep(_POLL_SECONDS)
    logger.warning("some agent processes survived SIGKILL: groups %s", sorted(entries))
    return len(entries)


atexit.register(kill_registered_groups)
