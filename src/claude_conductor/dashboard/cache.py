"""Plumbing between Streamlit's sync scripts and Prefect's async client: ``run_sync`` runs one
short event loop per call, bounded by a timeout; ``cached`` keeps a read for a couple of
seconds per API URL, so many pages and browser tabs refreshing at once cost the server one
query each. Actions call ``clear_cache`` so the next page shows their effect.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from claude_conductor.client import connection
from claude_conductor.errors import ApiTimeoutError
from claude_conductor.settings import ConductorSettings

__all__ = [
    "API_TIMEOUT_SECONDS",
    "CACHE_SECONDS",
    "ApiTimeoutError",
    "cached",
    "clear_cache",
    "run_sync",
]

T = TypeVar("T")

CACHE_SECONDS = 2.0
API_TIMEOUT_SECONDS = 20.0


def run_sync(make: Callable[[], Awaitable[T]], timeout_seconds: float = API_TIMEOUT_SECONDS) -> T:
    """Run an async Prefect call from sync code (a Streamlit script thread) and wait for it,
    at most ``timeout_seconds`` (``ApiTimeoutError``): ``client.connection.run_sync``."""

    async def call() -> T:
        return await make()

    return connection.run_sync(call(), timeout_seconds)


class _TTLCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[Hashable, tuple[float, Any]] = {}

    def get(self, key: Hashable, ttl_seconds: float, compute: Callable[[], T]) -> T:
        now = time.monotonic()
        with self._lock:
            hit = self._data.get(key)
        if hit is not None and now - hit[0] < ttl_seconds:
            value: T = hit[1]
            return value
        value = compute()
        with self._lock:
            self._data[key] = (time.monotonic(), value)
            if len(self._data) > 256:  # drop the oldest entries
                for old in sorted(self._data, key=lambda k: self._data[k][0])[:64]:
                    del self._data[old]
        return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


_cache = _TTLCache()


def clear_cache() -> None:
    """Forget cached reads (after an action, so the next page shows its effect)."""
    _cache.clear()


def cached(
    settings: ConductorSettings,
    key: tuple[Hashable, ...],
    make: Callable[[], Awaitable[T]],
    ttl_seconds: float = CACHE_SECONDS,
) -> T:
    """``run_sync(make)``, remembered for ``ttl_seconds`` under ``key`` and the API URL."""
    return _cache.get((settings.server.url, *key), ttl_seconds, lambda: run_sync(make))
