"""``conductor deploy kubernetes``: --render prints what ``kubectl apply -k`` would apply; a bad
overlay is one line and exit 2; without a reachable cluster ``up`` says what is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from k8s_fixtures import Rendered

pytestmark = pytest.mark.kubernetes

CONDUCTOR = [sys.executable, "-m", "claude_conductor.cli.main"]


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CONDUCTOR, *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_render_prints_the_overlay(
    kubectl: str, rendered: dict[str, Rendered], overlay: str
) -> None:
    proc = _run(["deploy", "kubernetes", "--overlay", overlay, "--render"])
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert docs == rendered[overlay].docs


def test_bad_overlay_is_one_line_and_exit_2(kubectl: str) -> None:
    proc = _run(["deploy", "kubernetes", "--overlay", "staging", "--render"])
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "'staging'" in lines[0] and "dev, prod" in lines[0]


def test_apply_without_a_cluster_says_what_is_missing(kubectl: str, tmp_path: Path) -> None:
    # A kubeconfig whose API server cannot answer (nothing listens on port 1).
    config = tmp_path / "kubeconfig"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:1"}}],
                "contexts": [{"name": "none", "context": {"cluster": "none", "user": "u"}}],
                "users": [{"name": "u", "user": {}}],
                "current-context": "none",
            }
        )
    )
    proc = _run(
        ["deploy", "kubernetes", "--overlay", "dev"],
        env={"KUBECONFIG": str(config), "CONDUCTOR_HOME": str(tmp_path / "home")},
    )
    assert proc.returncode != 0
    assert "no Kubernetes cluster reachable" in proc.stderr
    assert "--render" in proc.stderr
    assert "Traceback" not in proc.stderr
