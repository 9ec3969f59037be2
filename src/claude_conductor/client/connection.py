"""The one way to reach the Prefect API Conductor's settings name: a client with the configured
auth, a fast health check first (``client.rest.check_reachable``: ``ServerNotRunningError``
saying how to start the server, not a minute of client retries), and the one bridge that runs
its coroutines from plain code (the CLI, Streamlit's script thread), bounded when asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from claude_conductor.client.rest import check_reachable
from claude_conductor.errors import ApiTimeoutError
from claude_conductor.settings import ConductorSettings

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

__all__ = [
    "conductor_client",
    "env_for_prefect",
    "prefect_env",
    "run_sync",
]

T = TypeVar("T")


def prefect_env(settings: ConductorSettings, api_url: str | None = None) -> dict[str, str]:
    """``PREFECT_API_URL`` (and ``PREFECT_API_AUTH_STRING``) for the configured API."""
    env = {"PREFECT_API_URL": api_url or settings.server.url}
    if settings.server.auth_string is not None:
        env["PREFECT_API_AUTH_STRING"] = settings.server.auth_string.get_secret_value()
    return env


def env_for_prefect(settings: ConductorSettings) -> dict[str, str]:
    """This process's environment pointed at the configured API (for subprocesses)."""
    return {**os.environ, **prefect_env(settings)}


@contextlib.asynccontextmanager
async def conductor_client(
    settings: ConductorSettings, *, api_url: str | None = None, check: bool = True
) -> AsyncIterator[PrefectClient]:
    """A client on ``api_url`` (default ``settings.server.url``) with the configured auth;
    ``ServerNotRunningError`` when ``check`` and the API does not answer."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    url = api_url or settings.server.url
    if check:
        await check_reachable(url)
    env = prefect_env(settings, url)
    updates: dict[Any, Any] = {PREFECT_API_URL: env["PREFECT_API_URL"]}
    if "PREFECT_API_AUTH_STRING" in env:
        updates[PREFECT_API_AUTH_STRING] = env["PREFECT_API_AUTH_STRING"]
    with temporary_settings(updates=updates):
        async with get_client() as client:
            yield client


async def _bounded(coro: Coroutine[Any, Any, T], timeout_seconds: float | None) -> T:
    if timeout_seconds is None:
        return await coro
    try:
        return await asyncio.wait_for(coro, timeout_seconds)
    except TimeoutError as exc:
        raise ApiTimeoutError(
            f"the Prefect API did not answer within {timeout_seconds:.0f} s; "
            "check that the server is healthy (`conductor status`)"
        ) from exc


def run_sync(coro: Coroutine[Any, Any, T], timeout_seconds: float | None = None) -> T:
    """Run ``coro`` to completion from sync code, even when called inside a running loop
    (then in a helper thread with its own loop); ``ApiTimeoutError`` after
    ``timeout_seconds`` when given."""
    bounded = _bounded(coro, timeout_seconds)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(bounded)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(bounded)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="conductor-run-sync")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value
