"""Shared by the metrics tests: a fully populated snapshot, exposition parsing, the shipped
monitoring files and the metric names they use, and Prometheus' binaries."""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from claude_conductor.metrics.exporter import metric_families
from claude_conductor.metrics.records import TaskRecord
from claude_conductor.metrics.snapshot import FleetSnapshot, PoolGauges, Tally
from claude_conductor.models import TaskStatus

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deployments" / "monitoring"
PROMETHEUS_YML = MONITORING / "prometheus.yml"
RULES = sorted((MONITORING / "rules").glob("*.yml"))
DASHBOARDS = sorted((MONITORING / "grafana" / "dashboards").glob("*.json"))
K8S_COMPONENT = ROOT / "deployments" / "kubernetes" / "components" / "monitoring"

_NAME = re.compile(r"\b(conductor_[a-z0-9_]+)\b")


def need_binary(name: str) -> str:
    """The path of a Prometheus binary; skip (fail under CI) when it is missing."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed: apt-get install prometheus (Debian ships {name})"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the monitoring tests, but {message}")
        pytest.skip(message)
    return path


def record(n: int, *, status: TaskStatus = TaskStatus.SUCCEEDED, reason: str = "success",
           kind: str = "generic", **kw: Any) -> TaskRecord:  # fmt: skip
    base: dict[str, Any] = {
        "flow_run_id": f"run-{n}",
        "task_id": f"t-{n}",
        "kind": kind,
        "status": status,
        "reason": reason,
        "is_agent": True,
        "is_fanout": False,
        "model": "claude-sonnet",
        "cost_usd": 0.25,
        "input_tokens": 100,
        "output_tokens": 20,
        "start_latency_seconds": 1.5,
        "duration_seconds": 42.0,
        "ended_at": datetime(2026, 12, 2, tzinfo=UTC) + timedelta(seconds=n),
    }
    base.update(kw)
    return TaskRecord(**base)


def full_snapshot() -> FleetSnapshot:
    """A snapshot where every family has samples."""
    tally = Tally()
    tally.add(record(1))
    tally.add(record(2, status=TaskStatus.FAILED, reason="api_error_500", cost_usd=0.0))
    tally.add(record(3, status=TaskStatus.TIMED_OUT, reason="timeout", kind="refactor"))
    pools = [
        PoolGauges(pool="agents", name="conductor-agents", slots=2, busy=1, running=1,
                   queued={"urgent": 1, "normal": 2, "low": 0}, workers_online=1),
        PoolGauges(pool="coordinators", name="conductor-coordinators", slots=2, busy=0,
                   running=0, queued={"urgent": 0, "normal": 0, "low": 0}, workers_online=1),
    ]  # fmt: skip
    return FleetSnapshot(
        taken_at=datetime.now(UTC),
        api_url="http://127.0.0.1:1/api",
        api_up=True,
        pools=pools,
        submitted=5,
        started=4,
        **tally.parts(),  # type: ignore[arg-type]
    )


def exposition(snap: FleetSnapshot, budget: float | None = 5.0) -> str:
    class _One:
        def collect(self) -> Any:
            return metric_families(snap, cost_budget_usd_per_hour=budget)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_One())
    return generate_latest(registry).decode()


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """``(sample name, labels, value)`` of every sample in an exposition."""
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels`` (0 if none)."""
    return sum(
        v
        for n, got, v in samples(text)
        if n == name and all(got.get(k) == x for k, x in labels.items())
    )


def _exprs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for v in node.values() for e in _exprs(v)]
    if isinstance(node, list):
        return [e for v in node for e in _exprs(v)]
    return []


def rule_exprs() -> list[str]:
    return [e for path in RULES for e in _exprs(yaml.safe_load(path.read_text()))]


def dashboard_exprs() -> list[str]:
    return [e for path in DASHBOARDS for e in _exprs(json.loads(path.read_text()))]


def names_in(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in _NAME.findall(e)}
