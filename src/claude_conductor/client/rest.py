"""A small read-only client of the Prefect REST API, for what must answer fast from a fresh
process (``conductor status``, the metrics exporter's gauges): plain httpx and JSON, no
Prefect import (importing Prefect's client alone costs about a second of CPU). Everything
else talks to the API through Prefect's own client (``client.connection``).

Also the API's quick health check, which both use before their first call.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import ssl
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx

from claude_conductor.errors import ApiTimeoutError, ServerNotRunningError
from claude_conductor.redaction import url_without_secrets
from claude_conductor.settings import ConductorSettings

__all__ = [
    "BUSY_TIMEOUT_SECONDS",
    "HEALTH_TIMEOUT_SECONDS",
    "ApiReader",
    "api_reader",
    "check_reachable",
    "http_client",
]

HEALTH_TIMEOUT_SECONDS = 3.0
# A server that accepted the connection is running: when it is slow (a busy machine, SQLite
# under a burst) it gets this much longer before the check gives up on it.
BUSY_TIMEOUT_SECONDS = 30.0
_READ_TIMEOUT_SECONDS = 30.0


def http_client(url: str, **kwargs: Any) -> httpx.AsyncClient:
    """An httpx client for ``url``. httpx builds a verified TLS context (the CA bundle read,
    about 20-50 ms of CPU) for every client, whatever the scheme; a plain-http URL gets an
    empty one instead, which verifies against no CA (a redirect to https fails, closed)."""
    if not url.startswith("https:"):
        kwargs.setdefault("verify", _plain_http_tls())
    return httpx.AsyncClient(**kwargs)


@functools.cache
def _plain_http_tls() -> ssl.SSLContext:
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


async def check_reachable(
    url: str,
    timeout_seconds: float = HEALTH_TIMEOUT_SECONDS,
    busy_timeout_seconds: float = BUSY_TIMEOUT_SECONDS,
    *,
    http: httpx.AsyncClient | None = None,
) -> None:
    """Fail fast (no client retries) when nothing answers ``<url>/health``
    (``ServerNotRunningError``); a server that accepts the connection but is slow to answer
    is running, so it gets ``busy_timeout_seconds`` more (then ``ApiTimeoutError``). ``http``:
    a client to ask with (its connection is then reused), else one of its own."""
    health = url.rstrip("/") + "/health"
    try:
        async with contextlib.AsyncExitStack() as stack:
            if http is None:
                http = await stack.enter_async_context(http_client(url))
            try:
                response = await http.get(health, timeout=timeout_seconds)
            except httpx.ReadTimeout:
                response = await http.get(health, timeout=busy_timeout_seconds)
    except httpx.ReadTimeout as exc:
        raise ApiTimeoutError(
            f"the Prefect API at {url_without_secrets(url)} accepted the connection but did not "
            f"answer its health check within {timeout_seconds + busy_timeout_seconds:.0f} s; it "
            "is running but overloaded or stuck: check `conductor status` and the server's log"
        ) from exc
    except httpx.HTTPError as exc:
        raise ServerNotRunningError(url) from exc
    if response.status_code >= 500:
        raise ServerNotRunningError(url)


def _any(values: Iterable[str]) -> dict[str, list[str]]:
    return {"any_": list(values)}


class ApiReader:
    """The few reads a status needs, as Prefect's REST API serves them (JSON dicts)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        response = await self._http.post(path, json=body)
        response.raise_for_status()
        return response.json()

    async def work_pool(self, name: str) -> dict[str, Any] | None:
        """The pool (``concurrency_limit``, ``is_paused`` ...), None when there is none."""
        response = await self._http.get(f"work_pools/{name}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        pool: dict[str, Any] = response.json()
        return pool

    async def workers(self, pool: str) -> list[dict[str, Any]]:
        """The pool's workers (``status`` ONLINE/OFFLINE)."""
        workers: list[dict[str, Any]] = await self._post(f"work_pools/{pool}/workers/filter", {})
        return workers

    async def count_runs(
        self, pool: str, state_types: Iterable[str], queues: Iterable[str] | None = None
    ) -> int:
        """How many of the pool's flow runs are in one of ``state_types`` (and queues)."""
        runs: dict[str, Any] = {"state": {"type": _any(state_types)}}
        if queues is not None:
            runs["work_queue_name"] = _any(queues)
        body = {"flow_runs": runs, "work_pools": {"name": _any([pool])}}
        return int(await self._post("flow_runs/count", body))

    async def deployment_names(self, pools: Iterable[str]) -> list[str]:
        """``flow/deployment`` of every deployment of ``pools``, sorted."""
        deployments = await self._post("deployments/filter", {"work_pools": {"name": _any(pools)}})
        ids = sorted({d["flow_id"] for d in deployments})
        flows = await self._post("flows/filter", {"flows": {"id": _any(ids)}}) if ids else []
        names = {f["id"]: f["name"] for f in flows}
        return sorted(f"{names.get(d['flow_id'], d['flow_id'])}/{d['name']}" for d in deployments)


def _headers(settings: ConductorSettings) -> dict[str, str]:
    """What Prefect's client sends for ``PREFECT_API_AUTH_STRING``: HTTP basic auth."""
    if settings.server.auth_string is None:
        return {}
    token = base64.b64encode(settings.server.auth_string.get_secret_value().encode()).decode()
    return {"Authorization": f"Basic {token}"}


@contextlib.asynccontextmanager
async def api_reader(
    settings: ConductorSettings,
    *,
    api_url: str | None = None,
    check: bool = True,
    busy_timeout_seconds: float = BUSY_TIMEOUT_SECONDS,
) -> AsyncIterator[ApiReader]:
    """An ``ApiReader`` on ``api_url`` (default ``settings.server.url``) with the configured
    auth; when ``check``, the API's health is asked first on the same connection
    (``check_reachable``: ``ServerNotRunningError``, ``ApiTimeoutError``)."""
    url = api_url or settings.server.url
    async with http_client(
        url,
        base_url=url.rstrip("/") + "/",
        headers=_headers(settings),
        timeout=_READ_TIMEOUT_SECONDS,
    ) as http:
        if check:
            await check_reachable(url, busy_timeout_seconds=busy_timeout_seconds, http=http)
        yield ApiReader(http)
