"""Process hardening for the processes that hold a control-plane credential (the worker, its
forkserver, a flow run's engine): the agent they start runs as the same user, so without this
it could read their environment (``PREFECT_API_AUTH_STRING``) or memory through ``/proc``.

``make_undumpable`` sets the process non-dumpable (``prctl(PR_SET_DUMPABLE, 0)``): the kernel
then makes ``/proc/<pid>/environ``, ``mem``, ``maps`` and ``fd`` owned by root and refuses
ptrace and ``process_vm_readv`` from other processes of the same user. It lasts for the
process's life (an ``execve`` resets it) and is inherited across ``fork``; children that
``exec`` (the agent) are dumpable again, which only exposes their own, scrubbed environment.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from typing import Any

__all__ = ["is_dumpable", "make_undumpable"]

logger = logging.getLogger(__name__)

_PR_SET_DUMPABLE = 4
_PR_GET_DUMPABLE = 3


def _prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return libc.prctl


def make_undumpable() -> bool:
    """Make this process non-dumpable; ``True`` when it is (always on Linux)."""
    prctl = _prctl()
    if prctl is None:
        return False
    if prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        logger.warning("prctl(PR_SET_DUMPABLE, 0) failed: errno %d", ctypes.get_errno())
        return False
    return True


def is_dumpable() -> bool:
    """Whether this process is dumpable (``True`` off Linux, where nothing is enforced)."""
    prctl = _prctl()
    if prctl is None:
        return True
    return bool(prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0))
