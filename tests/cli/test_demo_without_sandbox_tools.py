"""The README's first command on a fresh machine: no bubblewrap installed. The offline demo
still succeeds (its agent uses the file tools only, which need no sandbox, and it skips its
verify command, which would) and says how to get the sandbox for real work; a task whose agent
may run Bash is refused with the fix."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _bin_without_sandbox_tools(tmp_path: Path) -> Path:
    """A PATH with what a fresh Debian has for this (git, python3, sh) and no bwrap/socat."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for tool in ("git", "sh", "env"):
        found = shutil.which(tool)
        assert found, tool
        (folder / tool).symlink_to(found)
    (folder / "python3").symlink_to(sys.executable)
    return folder


def _conductor(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": str(_bin_without_sandbox_tools(tmp_path)),
        "HOME": str(tmp_path),
        "CONDUCTOR_HOME": str(tmp_path / "home"),
        "CONDUCTOR_AGENT__SANDBOX": "true",
    }
    return subprocess.run(
        [sys.executable, "-m", "claude_conductor.cli.main", *args],
        env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )  # fmt: skip


def test_the_offline_demo_runs_without_bubblewrap(tmp_path: Path) -> None:
    out = _conductor(tmp_path, "demo", "--local")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "apt-get install bubblewrap socat" in out.stderr
    done = _conductor(tmp_path / "again" if (tmp_path / "again").mkdir() is None else tmp_path,
                      "demo", "--local", "--json")  # fmt: skip
    result = json.loads(done.stdout)
    # Its verify command would run in the sandbox too: the demo has none here.
    assert result["status"] == "succeeded" and result["verify"] is None


def test_a_task_that_may_run_bash_names_the_missing_sandbox(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "a.txt").write_text("a\n")
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "i"],
        check=True,
    )
    out = _conductor(tmp_path, "run", "--prompt", "hi", "--repo", str(repo), "--local", "--json")
    assert out.returncode == 1, out.stderr
    assert (
        "bwrap" in out.stdout + out.stderr
        and "CONDUCTOR_AGENT__SANDBOX=false" in out.stdout + out.stderr
    )
