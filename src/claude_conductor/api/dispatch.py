"""Sync and async callers with one call, as Prefect's own functions do: in async code (an async
flow or task, or any running event loop) a call returns an awaitable; in sync code (a sync flow
or task, a plain script) it runs to the end and returns the value.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["in_async_context", "sync_or_awaitable"]

T = TypeVar("T")


def in_async_context() -> bool:
    """True inside an async Prefect flow or task, or wherever an event loop is running."""
    from prefect.context import get_run_context
    from prefect.exceptions import MissingContextError

    try:
        ctx = get_run_context()
    except MissingContextError:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return False
        return True
    owner = getattr(ctx, "task", None) or getattr(ctx, "flow", None)
    return bool(getattr(owner, "isasync", True))


def sync_or_awaitable(coro: Coroutine[Any, Any, T]) -> Any:
    """``coro`` itself in async code; its value in sync code (run on Prefect's sync bridge,
    which carries the caller's Prefect context, so a run started there is the caller's
    subflow)."""
    if in_async_context():
        return coro
    from prefect.utilities.asyncutils import run_coro_as_sync

    return run_coro_as_sync(coro)
