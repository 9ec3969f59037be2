"""config export/import carries a setup to a fresh home; secrets stay behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml


def conductor(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "CONDUCTOR_HOME": str(home), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "claude_conductor.cli.main", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_export_then_import_reproduces_settings(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    (a / "config.yaml").write_text(
        yaml.safe_dump({"worker": {"agents": 5}, "agent": {"inactivity_timeout_seconds": 42}})
    )
    secret = "sk-ant-super-secret-value"
    out = conductor(a, "config", "export", env={"CONDUCTOR_API_AUTH_STRING": f"u:{secret}"})
    assert out.returncode == 0, out.stderr
    assert secret not in out.stdout
    exported = tmp_path / "conductor.yaml"
    exported.write_text(out.stdout)

    imp = conductor(b, "config", "import", str(exported))
    assert imp.returncode == 0, imp.stderr
    shown = conductor(b, "config", "show", "--json")
    data = yaml.safe_load(shown.stdout)
    assert data["worker"]["agents"] == 5
    assert data["agent"]["inactivity_timeout_seconds"] == 42
    assert data["home"] == str(b)


def test_show_masks_secrets(tmp_path: Path) -> None:
    out = conductor(
        tmp_path, "config", "show", env={"CONDUCTOR_DASHBOARD_PASSWORD": "hunter2hunter2"}
    )
    assert "hunter2hunter2" not in out.stdout and "********" in out.stdout


def test_invalid_config_file_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("worker:\n  agents: 0\n")
    out = conductor(tmp_path / "h", "config", "import", str(bad))
    assert out.returncode == 2
    assert "worker.agents" in out.stderr and "0" in out.stderr
    assert not (tmp_path / "h").exists()


def test_secrets_in_agent_env_and_api_url_never_shown_or_exported(tmp_path: Path) -> None:
    token, password = "ghp_agent-token-0123456789", "url-password-0123"
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "agent": {"extra_env": {"GITHUB_TOKEN": token, "TZ": "UTC"}},
                "server": {"api_url": f"https://ops:{password}@prefect.example/api"},
            }
        )
    )
    for args in (("config", "show"), ("config", "show", "--json"), ("config", "export")):
        out = conductor(tmp_path, *args)
        assert out.returncode == 0, out.stderr
        assert token not in out.stdout and password not in out.stdout, args
        assert "prefect.example/api" in out.stdout and "UTC" in out.stdout
    exported = yaml.safe_load(conductor(tmp_path, "config", "export").stdout)
    assert exported["server"]["api_url"] == "https://prefect.example/api"
    assert "GITHUB_TOKEN" not in exported["agent"]["extra_env"]


def test_an_invalid_secret_setting_is_named_but_not_echoed(tmp_path: Path) -> None:
    secret = "not-a-mapping-but-secret-0123"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"dashboard": {"password": [secret]}}))
    out = conductor(tmp_path, "config", "show")
    assert out.returncode == 2
    assert "dashboard.password" in out.stderr and secret not in out.stderr
