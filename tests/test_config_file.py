"""``<home>/config.yaml`` has one writer: atomic, always 0600, import merges into it, and
``conductor config import`` reads a file, ``-`` or standard input."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from claude_conductor import config_file
from claude_conductor.errors import InputError
from claude_conductor.settings import ConductorSettings
from claude_conductor.tiers.docker.files import DockerOptions, ensure_secrets, stack_files
from claude_conductor.tiers.docker.stack import _point_host_at_stack
from claude_conductor.tiers.standalone.stack import _save_agents


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def conductor(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "claude_conductor.cli.main", *args],
        env={**os.environ, "CONDUCTOR_HOME": str(home)},
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=60,
    )


def _docker_host_config(home: Path) -> str:
    """What `conductor up --tier docker` leaves in <home>/config.yaml: the stack's API and its
    auth string (written by the docker tier's own code, without an engine)."""
    settings = ConductorSettings.model_validate({"home": str(home)})
    opts = DockerOptions(stack="house-test", http_port=18080)
    ensure_secrets(
        stack_files(settings, opts).secrets_dir, anthropic_api_key=None, offline_model=True
    )
    _point_host_at_stack(settings, opts, agents=None)
    auth = config_file.read_config(home)["server"]["auth_string"]
    assert auth.startswith("conductor:")
    return str(auth)


def test_import_keeps_a_docker_auth_string_at_0600(tmp_path: Path) -> None:
    home = tmp_path / "home"
    auth = _docker_host_config(home)
    path = config_file.config_path(home)
    assert _mode(path) == 0o600
    exported = tmp_path / "x.yaml"
    exported.write_text(yaml.safe_dump({"worker": {"agents": 4}}))
    out = conductor(home, "config", "import", str(exported))
    assert out.returncode == 0, out.stderr
    assert _mode(path) == 0o600
    data = yaml.safe_load(path.read_text())
    assert data["server"]["auth_string"] == auth and data["tier"] == "docker"
    assert data["worker"]["agents"] == 4


@pytest.mark.parametrize("how", ["dash", "redirect"])
def test_import_reads_standard_input(tmp_path: Path, how: str) -> None:
    home = tmp_path / "home"
    backup = yaml.safe_dump({"worker": {"agents": 6}, "agent": {"kill_grace_seconds": 7}})
    args = ("config", "import", "-") if how == "dash" else ("config", "import")
    out = conductor(home, *args, stdin=backup)
    assert out.returncode == 0, out.stderr
    data = config_file.read_config(home)
    assert data == {"worker": {"agents": 6}, "agent": {"kill_grace_seconds": 7}}
    assert _mode(config_file.config_path(home)) == 0o600


def test_bad_yaml_on_standard_input_is_one_clear_error(tmp_path: Path) -> None:
    out = conductor(tmp_path / "h", "config", "import", "-", stdin="worker: [\n")
    assert out.returncode == 2
    assert "<stdin>" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "h").exists()


def test_every_writer_leaves_0600_and_keeps_other_keys(tmp_path: Path) -> None:
    os.umask(0o022)
    config_file.write_config(tmp_path, {"agent": {"default_model": "m"}})
    assert _mode(config_file.config_path(tmp_path)) == 0o600
    settings = ConductorSettings.model_validate({"home": str(tmp_path)})
    _save_agents(settings, 3)
    assert _mode(config_file.config_path(tmp_path)) == 0o600
    assert config_file.read_config(tmp_path) == {
        "agent": {"default_model": "m"},
        "worker": {"agents": 3},
    }
    merged = config_file.merge_config(tmp_path, {"home": "/elsewhere", "worker": {"pool": "p"}})
    assert merged["worker"] == {"agents": 3, "pool": "p"} and "home" not in merged
    assert not [p for p in tmp_path.iterdir() if p.name != "config.yaml"], "temp files left"


def test_a_broken_file_is_one_clear_error(tmp_path: Path) -> None:
    config_file.config_path(tmp_path).write_text("- a list\n")
    with pytest.raises(InputError, match="expected a mapping"):
        config_file.read_config(tmp_path)


@pytest.mark.parametrize("args", [("config", "import"), ("config", "import", "-")])
def test_import_with_nothing_to_read_is_a_usage_error(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    out = conductor(tmp_path / "h", *args, stdin="")
    assert out.returncode == 2, out.stderr
    assert "Missing argument 'FILE'" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "h").exists()
