"""The shipped monitoring files: Prometheus' own checker accepts the scrape config and the
rules, and every conductor_* metric the rules and the Grafana dashboards use is one the
exporter really serves (names parsed from the files, not listed by hand)."""

from __future__ import annotations

import json
import subprocess

import yaml
from metrics_support import (
    DASHBOARDS,
    PROMETHEUS_YML,
    RULES,
    dashboard_exprs,
    exposition,
    full_snapshot,
    names_in,
    need_binary,
    rule_exprs,
    samples,
)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need_binary("promtool"), *args], capture_output=True, text=True, timeout=120
    )


def test_promtool_accepts_the_rules() -> None:
    assert RULES, "no rule files shipped"
    out = _promtool("check", "rules", *map(str, RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr


def test_promtool_accepts_the_scrape_config() -> None:
    # `check config` also checks the rule files the config names (relative to it).
    out = _promtool("check", "config", str(PROMETHEUS_YML))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "rule files found" in out.stdout + out.stderr


def _exported() -> set[str]:
    return {name for name, _, _ in samples(exposition(full_snapshot()))}


def test_rules_use_only_exported_metrics() -> None:
    used = names_in(rule_exprs())
    assert {"conductor_tasks_total", "conductor_queue_depth", "conductor_cost_usd_total"} <= used
    missing = used - _exported()
    assert not missing, f"rules use metrics the exporter does not serve: {sorted(missing)}"


def test_dashboards_use_only_exported_metrics() -> None:
    assert DASHBOARDS, "no Grafana dashboard shipped"
    used = names_in(dashboard_exprs())
    assert {"conductor_task_start_latency_seconds_bucket", "conductor_agent_exits_total"} <= used
    missing = used - _exported()
    assert not missing, f"dashboards use metrics the exporter does not serve: {sorted(missing)}"


def test_alerts_cover_the_operator_questions() -> None:
    alerts = {
        rule["alert"]: rule
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert {
        "ConductorTaskFailureRateHigh",
        "ConductorQueueGrowingWhileSlotsIdle",
        "ConductorCostOverBudget",
        "ConductorPrefectApiUnreachable",
        "ConductorNoWorkerOnline",
    } <= set(alerts)
    assert all(rule.get("annotations", {}).get("summary") for rule in alerts.values())
    # The exporter-down alert must name the job the scrape config defines.
    jobs = {job["job_name"] for job in yaml.safe_load(PROMETHEUS_YML.read_text())["scrape_configs"]}
    assert 'job="conductor"' in alerts["ConductorExporterDown"]["expr"] and "conductor" in jobs


def test_dashboard_panels_are_wired_to_the_datasource() -> None:
    for path in DASHBOARDS:
        doc = json.loads(path.read_text())
        assert doc["uid"] and doc["title"]
        ids = [p["id"] for p in doc["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in doc["panels"]:
            assert panel["targets"], f"{path.name}: panel {panel['title']!r} has no query"
            assert panel["datasource"]["uid"] == "${datasource}"
