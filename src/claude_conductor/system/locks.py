"""An exclusive advisory file lock with a bounded wait, on ``filelock`` (``flock`` on Linux).

``flock`` locks belong to an open file description, and each call opens its own, so the lock
excludes other threads of this process as well as other processes (two Conductor workers on one
machine). The lock file is left in place after use; it is empty and harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import filelock

from claude_conductor.errors import WorkspaceError

__all__ = ["LOCK_WAIT_SECONDS", "file_lock"]

logger = logging.getLogger(__name__)

LOCK_WAIT_SECONDS = 600.0
_POLL_SECONDS = 0.02


@contextmanager
def file_lock(path: Path, *, wait_seconds: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` block.

    Raises ``WorkspaceError`` when another holder keeps it longer than ``wait_seconds``.
    """
    lock = filelock.FileLock(
        path,
        timeout=wait_seconds,
        mode=0o644,
        thread_local=False,
        poll_interval=_POLL_SECONDS,
        preserve_lock_file=True,
    )
    try:
        lock.acquire()
    except filelock.Timeout:
        raise WorkspaceError(
            f"waited {wait_seconds:g}s for the lock {str(path)!r}, which another "
            "Conductor task still holds; retry when it has finished"
        ) from None
    logger.debug("locked %s", path)
    try:
        yield
    finally:
        lock.release()
