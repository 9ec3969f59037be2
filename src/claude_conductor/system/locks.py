"""An exclusive advisory file lock (``fcntl.flock``) with a bounded wait.

``flock`` locks belong to an open file description, so the lock excludes other threads of this
process as well as other processes (two Conductor workers on one machine). The lock file is left
in place after use; it is empty and harmless.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise WorkspaceError(
                        f"waited {wait_seconds:g}s for the lock {str(path)!r}, which another "
                        "Conductor task still holds; retry when it has finished"
                    ) from None
                time.sleep(_POLL_SECONDS)
        logger.debug("locked %s", path)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
