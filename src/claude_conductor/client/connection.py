"""A Prefect client on the API Conductor's settings name, and a way to run its coroutines
from plain (non-async) code such as the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from prefect.client.orchestration import PrefectClient, get_client
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

from claude_conductor.errors import ServerNotRunningError
from claude_conductor.settings import ConductorSettings

__all__ = ["conductor_client", "run_sync"]

T = TypeVar("T")


@contextlib.asynccontextmanager
async def conductor_client(
    settings: ConductorSettings, *, api_url: str | None = None, check: bool = True
) -> AsyncIterator[PrefectClient]:
    """A client on ``api_url`` (default ``settings.server.url``) with the configured auth;
    ``ServerNotRunningError`` when ``check`` and the API does not answer."""
    url = api_url or settings.server.url
    updates: dict[Any, Any] = {PREFECT_API_URL: url}
    if settings.server.auth_string is not None:
        updates[PREFECT_API_AUTH_STRING] = settings.server.auth_string.get_secret_value()
    with temporary_settings(updates=updates):
        async with get_client() as client:
            if check and await client.api_healthcheck() is not None:
                raise ServerNotRunningError(url)
            yield client


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from sync code, even when called inside a running loop
    (then in a helper thread with its own loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="conductor-run-sync")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value
