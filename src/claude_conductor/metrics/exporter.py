"""The Prometheus exporter: a collector that turns ``FleetSnapshot`` s into ``conductor_*``
metrics, refreshed at most once per ``ttl_seconds`` however often it is scraped, and a small
HTTP server for ``/metrics`` and ``/healthz`` (which answers without touching the API).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any
from wsgiref.simple_server import make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

from claude_conductor.metrics.reader import FleetReader
from claude_conductor.metrics.snapshot import FleetSnapshot, HistogramData
from claude_conductor.redaction import MASK, strip_url_credentials
from claude_conductor.settings import ConductorSettings

__all__ = [
    "HEALTH_PATH",
    "REFRESH_TIMEOUT_SECONDS",
    "FleetCollector",
    "make_app",
    "metric_families",
    "serve",
]

logger = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
REFRESH_TIMEOUT_SECONDS = 8.0
"""The longest a scrape waits for the API (Prometheus's default scrape timeout is 10 s)."""


def _histogram(name: str, doc: str, data: HistogramData | None) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc)
    if data is not None:
        family.add_metric([], buckets=data.cumulative(), sum_value=data.sum)
    return family


def metric_families(
    snap: FleetSnapshot, *, cost_budget_usd_per_hour: float | None = None
) -> list[Metric]:
    """The ``conductor_*`` metrics of one snapshot."""
    up = GaugeMetricFamily(
        "conductor_prefect_api_up", "1 when the Prefect API answered the last refresh, else 0."
    )
    up.add_metric([], 1.0 if snap.api_up else 0.0)
    out: list[Metric] = [up]

    depth = GaugeMetricFamily(
        "conductor_queue_depth",
        "Runs waiting for a slot (Scheduled, Late included) per pool and priority queue.",
        labels=["pool", "priority"],
    )
    running = GaugeMetricFamily(
        "conductor_agents_running", "Runs in Running state per pool.", labels=["pool"]
    )
    busy = GaugeMetricFamily(
        "conductor_agents_busy", "Runs holding a slot (Pending or Running).", labels=["pool"]
    )
    slots = GaugeMetricFamily(
        "conductor_agent_slots", "Slots per pool (its concurrency limit).", labels=["pool"]
    )
    workers = GaugeMetricFamily(
        "conductor_workers_online", "Workers with a recent heartbeat per pool.", labels=["pool"]
    )
    paused = GaugeMetricFamily("conductor_pool_paused", "1 for a paused pool.", labels=["pool"])
    for pool in snap.pools if snap.api_up else []:
        for priority, n in pool.queued.items():
            depth.add_metric([pool.pool, priority], float(n))
        running.add_metric([pool.pool], float(pool.running))
        busy.add_metric([pool.pool], float(pool.busy))
        slots.add_metric([pool.pool], float(pool.slots))
        workers.add_metric([pool.pool], float(pool.workers_online))
        paused.add_metric([pool.pool], 1.0 if pool.paused else 0.0)
    out += [depth, running, busy, slots, workers, paused]

    if snap.api_up:
        submitted = CounterMetricFamily(
            "conductor_tasks_submitted_total", "Conductor tasks submitted (flow runs created)."
        )
        submitted.add_metric([], float(snap.submitted))
        started = CounterMetricFamily(
            "conductor_tasks_started_total", "Conductor tasks that started running."
        )
        started.add_metric([], float(snap.started))
        out += [submitted, started]

    tasks = CounterMetricFamily(
        "conductor_tasks_total",
        "Finished tasks by kind and final status.",
        labels=["kind", "status"],
    )
    for row in snap.tasks:
        tasks.add_metric([row.kind, row.status], float(row.count))
    cost = CounterMetricFamily(
        "conductor_cost_usd_total", "Agent cost in USD (per the CLI).", labels=["kind", "model"]
    )
    for c in snap.cost:
        cost.add_metric([c.kind, c.model], c.usd)
    tokens = CounterMetricFamily(
        "conductor_tokens_total",
        "Agent tokens by kind, model and type.",
        labels=["kind", "model", "type"],
    )
    for t in snap.tokens:
        tokens.add_metric([t.kind, t.model, t.type], float(t.tokens))
    exits = CounterMetricFamily(
        "conductor_agent_exits_total",
        "Agent exits by reason: success, denied, timeout, stalled, cancelled, turns, budget, "
        "crash, verify_failed, error, api_error_<status>.",
        labels=["reason"],
    )
    for e in snap.exits:
        exits.add_metric([e.reason], float(e.count))
    out += [tasks, cost, tokens, exits]
    out.append(
        _histogram(
            "conductor_task_start_latency_seconds",
            "Seconds from submission to Running, per finished task.",
            snap.start_latency,
        )
    )
    out.append(
        _histogram(
            "conductor_task_duration_seconds",
            "Seconds from Running to the final state, per finished task.",
            snap.duration,
        )
    )
    seen = GaugeMetricFamily(
        "conductor_exporter_finished_runs", "Finished runs the counters are computed from."
    )
    seen.add_metric([], float(snap.finished_seen))
    stamp = GaugeMetricFamily(
        "conductor_exporter_last_refresh_timestamp_seconds", "When the numbers were read."
    )
    stamp.add_metric([], snap.taken_at.timestamp())
    out += [seen, stamp]
    if cost_budget_usd_per_hour is not None:
        budget = GaugeMetricFamily(
            "conductor_cost_budget_usd_per_hour",
            "The configured cost budget per hour (alerts compare the cost rate with it).",
        )
        budget.add_metric([], cost_budget_usd_per_hour)
        out.append(budget)
    return out


class FleetCollector:
    """A prometheus-client collector over a ``FleetReader``; reads at most once per TTL."""

    def __init__(
        self,
        settings: ConductorSettings,
        *,
        ttl_seconds: float = 5.0,
        cost_budget_usd_per_hour: float | None = None,
        reader: FleetReader | None = None,
    ) -> None:
        self.reader = reader or FleetReader(settings)
        self._api_url = strip_url_credentials(settings.server.url, MASK)
        self.ttl_seconds = ttl_seconds
        self.cost_budget_usd_per_hour = cost_budget_usd_per_hour
        self.refreshes = 0
        self._lock = threading.Lock()
        self._snap: FleetSnapshot | None = None
        self._at = 0.0
        self._refresh_seconds = 0.0

    def snapshot(self) -> FleetSnapshot:
        """The cached snapshot, refreshed when older than the TTL (one refresh at a time). A
        refresh is bounded by ``REFRESH_TIMEOUT_SECONDS`` (under Prometheus's default scrape
        timeout): an API that slow leaves the last snapshot in place (its
        ``conductor_exporter_last_refresh_timestamp_seconds`` says how old it is), or, before
        any, gives one that says the API is down."""
        with self._lock:
            if self._snap is None or time.monotonic() - self._at >= self.ttl_seconds:
                began = time.monotonic()
                try:
                    self._snap = _run(
                        asyncio.wait_for(self.reader.refresh(), REFRESH_TIMEOUT_SECONDS)
                    )
                except TimeoutError:
                    logger.warning(
                        "the Prefect API did not answer within %.0fs; serving the last numbers",
                        REFRESH_TIMEOUT_SECONDS,
                    )
                    if self._snap is None:
                        self._snap = FleetSnapshot(
                            api_up=False,
                            error=f"the Prefect API did not answer within "
                            f"{REFRESH_TIMEOUT_SECONDS:.0f}s",
                            taken_at=datetime.now(UTC),
                            api_url=self._api_url,
                        )
                self._at = time.monotonic()
                self._refresh_seconds = self._at - began
                self.refreshes += 1
            return self._snap

    def collect(self) -> Iterable[Metric]:
        snap = self.snapshot()
        yield from metric_families(snap, cost_budget_usd_per_hour=self.cost_budget_usd_per_hour)
        took = GaugeMetricFamily(
            "conductor_exporter_refresh_seconds", "How long the last read of the API took."
        )
        took.add_metric([], self._refresh_seconds)
        yield took


def _run(coro: Any) -> FleetSnapshot:
    result: FleetSnapshot = asyncio.run(coro)
    return result


def make_app(collector: FleetCollector) -> Callable[..., Iterator[bytes]]:
    """A WSGI app: ``/metrics`` (also ``/``) and ``/healthz``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        if environ.get("PATH_INFO") == HEALTH_PATH:
            start_response("200 OK", [("Content-Type", "text/plain")])
            return iter([b"ok\n"])
        result: Iterator[bytes] = metrics_app(environ, start_response)
        return result

    return app


def serve(
    settings: ConductorSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 9464,
    ttl_seconds: float = 5.0,
    cost_budget_usd_per_hour: float | None = None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until interrupted."""
    collector = FleetCollector(
        settings, ttl_seconds=ttl_seconds, cost_budget_usd_per_hour=cost_budget_usd_per_hour
    )
    httpd = make_server(host, port, make_app(collector), ThreadingWSGIServer, _SilentHandler)
    url = f"http://{host}:{httpd.server_port}/metrics"
    logger.info("serving Conductor metrics at %s", url)
    if ready is not None:
        ready(url)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
