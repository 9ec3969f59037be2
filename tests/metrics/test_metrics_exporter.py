"""The exporter's output: names, labels and values of a snapshot, the TTL cache, /healthz,
and the CLI's errors for bad options."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime
from wsgiref.simple_server import make_server

import pytest
from metrics_support import exposition, full_snapshot, samples, value
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

from claude_conductor.metrics.exporter import FleetCollector, make_app
from claude_conductor.metrics.snapshot import FleetSnapshot
from claude_conductor.settings import ConductorSettings


def test_every_interface_metric_is_exported_with_its_labels() -> None:
    text = exposition(full_snapshot())
    assert value(text, "conductor_queue_depth", pool="agents", priority="normal") == 2
    assert value(text, "conductor_queue_depth", pool="agents") == 3
    assert value(text, "conductor_agents_running", pool="agents") == 1
    assert value(text, "conductor_agent_slots", pool="agents") == 2
    assert value(text, "conductor_workers_online", pool="coordinators") == 1
    assert value(text, "conductor_tasks_total", kind="generic", status="succeeded") == 1
    assert value(text, "conductor_tasks_total", kind="refactor", status="timed_out") == 1
    assert value(text, "conductor_agent_exits_total", reason="api_error_500") == 1
    assert value(text, "conductor_agent_exits_total", reason="timeout") == 1
    assert value(text, "conductor_cost_usd_total", kind="generic", model="claude-sonnet") == 0.25
    assert value(text, "conductor_tokens_total", kind="refactor", type="output") == 20
    assert value(text, "conductor_task_duration_seconds_count") == 3
    assert value(text, "conductor_task_start_latency_seconds_bucket", le="2.0") == 3
    assert value(text, "conductor_prefect_api_up") == 1
    assert value(text, "conductor_tasks_submitted_total") == 5
    assert value(text, "conductor_cost_budget_usd_per_hour") == 5
    assert all(name.startswith("conductor_") for name, _, _ in samples(text))


def test_api_down_keeps_counters_and_drops_gauges() -> None:
    snap = full_snapshot().model_copy(update={"api_up": False, "error": "no answer"})
    text = exposition(snap, budget=None)
    assert value(text, "conductor_prefect_api_up") == 0
    assert value(text, "conductor_tasks_total") == 3, "counters stay (they come from records)"
    names = {n for n, _, _ in samples(text)}
    assert "conductor_queue_depth" not in names and "conductor_workers_online" not in names
    assert "conductor_cost_budget_usd_per_hour" not in names


class _CountingReader:
    """A stand-in for FleetReader that counts refreshes (the API is not what is tested)."""

    def __init__(self) -> None:
        self.calls = 0

    async def refresh(self) -> FleetSnapshot:
        self.calls += 1
        return full_snapshot().model_copy(update={"taken_at": datetime.now(UTC)})


def test_scrapes_within_the_ttl_share_one_read_and_healthz_reads_nothing() -> None:
    reader = _CountingReader()
    collector = FleetCollector(ConductorSettings(), ttl_seconds=60, reader=reader)  # type: ignore[arg-type]
    httpd = make_server("127.0.0.1", 0, make_app(collector), ThreadingWSGIServer, _SilentHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_port}"
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=10) as resp:
            assert resp.read() == b"ok\n"
        assert reader.calls == 0
        bodies = []
        for _ in range(5):
            with urllib.request.urlopen(f"{base}/metrics", timeout=10) as resp:
                bodies.append(resp.read().decode())
        assert reader.calls == 1
        assert value(bodies[-1], "conductor_tasks_total") == 3
        collector.ttl_seconds = 0
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as resp:
            resp.read()
        assert reader.calls == 2
    finally:
        httpd.shutdown()
        httpd.server_close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "claude_conductor.cli.main", "metrics", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_options_are_one_line_and_exit_2() -> None:
    out = _cli("serve", "--cost-budget-usd-per-hour", "-3")
    assert out.returncode == 2
    assert "--cost-budget-usd-per-hour -3.0" in out.stderr and "positive" in out.stderr
    assert "Traceback" not in out.stderr


def test_unreachable_api_is_reported_without_the_urls_password() -> None:
    secret_url = "http://bob:s3cret-pw@127.0.0.1:9/api"  # port 9: nothing listens
    out = subprocess.run(
        [sys.executable, "-m", "claude_conductor.cli.main", "metrics", "show", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "CONDUCTOR_API_URL": secret_url},
    )
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    assert doc["api_up"] is False and "not running" in doc["error"]
    assert "s3cret-pw" not in out.stdout + out.stderr


class _SlowReader(_CountingReader):
    """Answers at once, then (like a swamped API) only after a long while."""

    def __init__(self) -> None:
        super().__init__()
        self.delay = 0.0

    async def refresh(self) -> FleetSnapshot:
        await asyncio.sleep(self.delay)
        return await super().refresh()


def test_a_slow_api_never_holds_a_scrape_past_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    from claude_conductor.metrics import exporter

    monkeypatch.setattr(exporter, "REFRESH_TIMEOUT_SECONDS", 0.2)
    reader = _SlowReader()
    collector = FleetCollector(ConductorSettings(), ttl_seconds=0, reader=reader)  # type: ignore[arg-type]
    first = collector.snapshot()
    assert first.api_up
    reader.delay = 5.0
    started = time.monotonic()
    again = collector.snapshot()
    assert time.monotonic() - started < 2
    assert again is first  # the last numbers, with their own (older) time
    slow = FleetCollector(ConductorSettings(), ttl_seconds=0, reader=reader)  # type: ignore[arg-type]
    never = slow.snapshot()  # nothing read yet: the API is down as far as anyone can tell
    assert not never.api_up and "did not answer within" in (never.error or "")
