"""The monitoring pieces of each tier: the compose `monitoring` profile scrapes the exporter
service it defines, and the Kubernetes component renders with kustomize, in sync with the
rules and dashboard it ships."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from metrics_support import (
    DASHBOARDS,
    K8S_COMPONENT,
    MONITORING,
    PROMETHEUS_YML,
    ROOT,
    RULES,
    need_binary,
)

COMPOSE = ROOT / "deployments" / "docker" / "compose.yaml"


def _compose_config(*profiles: str) -> dict[str, Any]:
    binary = Path(sys.executable).with_name("docker-compose")
    if not binary.exists():
        binary = Path(need_binary("docker-compose"))
    env = {
        **os.environ,
        "CONDUCTOR_REPOS_DIR": "/srv/repos",
        "CONDUCTOR_DATA_DIR": "/srv/conductor",
        "DOCKER_GID": "999",
    }
    args = [str(binary), "-f", str(COMPOSE)]
    for profile in profiles:
        args += ["--profile", profile]
    out = subprocess.run(
        [*args, "config", "--format", "json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0 and out.stdout.strip(), out.stderr
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def test_monitoring_profile_is_opt_in_and_scrapes_its_exporter() -> None:
    assert not {"metrics", "prometheus"} & set(_compose_config()["services"])
    services = _compose_config("monitoring")["services"]
    metrics, prometheus = services["metrics"], services["prometheus"]
    command = metrics["command"]
    assert command[:3] == ["conductor", "metrics", "serve"]
    port = command[command.index("--port") + 1]
    targets = yaml.safe_load(PROMETHEUS_YML.read_text())["scrape_configs"][0]["static_configs"]
    assert targets[0]["targets"] == [f"metrics:{port}"]
    assert set(metrics["networks"]) & set(prometheus["networks"]), "no shared network"
    mounts = {v["target"]: Path(v["source"]) for v in prometheus["volumes"] if v.get("source")}
    assert mounts["/etc/prometheus/prometheus.yml"] == PROMETHEUS_YML
    assert mounts["/etc/prometheus/rules"] == MONITORING / "rules"
    assert prometheus["pull_policy"] == "never", "no registry here: the image is built locally"
    assert "grafana" not in services, "Grafana needs a registry: its own profile"


def _render(tmp_path: Path) -> list[dict[str, Any]]:
    kubectl = need_binary("kubectl")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"namespace: conductor\ncomponents:\n  - {os.path.relpath(K8S_COMPONENT, overlay)}\n"
    )
    out = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_kubernetes_component_renders_monitor_rules_and_dashboard(tmp_path: Path) -> None:
    docs = {d["kind"]: d for d in _render(tmp_path)}
    assert set(docs) == {"PodMonitor", "PrometheusRule", "ConfigMap"}
    monitor = docs["PodMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"] == {"app.kubernetes.io/name": "conductor-metrics"}
    endpoint = monitor["podMetricsEndpoints"][0]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert {"targetLabel": "job", "replacement": "conductor"} in endpoint["relabelings"]
    shipped = [g for path in RULES for g in yaml.safe_load(path.read_text())["groups"]]
    assert docs["PrometheusRule"]["spec"]["groups"] == shipped, (
        "PrometheusRule is stale: python deployments/monitoring/sync_kubernetes.py"
    )
    config_map = docs["ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    for dashboard in DASHBOARDS:
        assert json.loads(config_map["data"][dashboard.name]) == json.loads(
            dashboard.read_text()
        ), f"{dashboard.name} is stale: python deployments/monitoring/sync_kubernetes.py"
