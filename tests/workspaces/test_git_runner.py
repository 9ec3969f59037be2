"""The git runner: argv, environment, errors with stderr, timeouts that leave nothing behind."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from claude_conductor.errors import WorkspaceError
from claude_conductor.workspaces.git import (
    CONDUCTOR_EMAIL,
    CONDUCTOR_NAME,
    build_git_argv,
    git_env,
    redact,
    run_git,
    try_git,
)


def test_argv_is_a_list_with_config_before_the_command() -> None:
    argv = build_git_argv(["commit", "-m", "a; rm -rf /"], {"commit.gpgsign": "false"})
    assert argv == ["git", "-c", "commit.gpgsign=false", "commit", "-m", "a; rm -rf /"]


def test_env_never_prompts_and_carries_conductors_identity() -> None:
    env = git_env({"PATH": "/bin", "GIT_DIR": "/elsewhere/.git", "GIT_INDEX_FILE": "/x"})
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["GIT_AUTHOR_NAME"] == env["GIT_COMMITTER_NAME"] == CONDUCTOR_NAME
    assert env["GIT_AUTHOR_EMAIL"] == env["GIT_COMMITTER_EMAIL"] == CONDUCTOR_EMAIL
    assert "GIT_DIR" not in env and "GIT_INDEX_FILE" not in env
    assert env["PATH"] == "/bin"
    assert "BatchMode=yes" in env["GIT_SSH_COMMAND"]


def test_env_keeps_the_users_own_ssh_command() -> None:
    env = git_env({"GIT_SSH_COMMAND": "ssh -i key"})
    assert env["GIT_SSH_COMMAND"] == "ssh -i key"


def test_redact_hides_url_passwords() -> None:
    text = "fatal: could not read https://bob:s3cret@example.com/x.git"
    assert redact(text) == "fatal: could not read https://bob:***@example.com/x.git"
    assert redact("git@github.com:me/x.git") == "git@github.com:me/x.git"


def test_failure_raises_workspace_error_with_stderr_tail(repo: Path) -> None:
    with pytest.raises(WorkspaceError) as info:
        run_git(["rev-parse", "--verify", "no-such-branch"], repo)
    assert "git rev-parse --verify no-such-branch failed" in str(info.value)
    assert "Needed a single revision" in info.value.stderr_tail


def test_try_git_reports_the_exit_code(repo: Path) -> None:
    outcome = try_git(["rev-parse", "--verify", "--quiet", "nope"], repo)
    assert outcome.returncode == 1
    assert try_git(["rev-parse", "HEAD"], repo).returncode == 0


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="does not exist"):
        run_git(["status"], tmp_path / "gone")


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found


def test_timeout_stops_git_and_everything_it_started(repo: Path) -> None:
    marker = "7.3179"  # an unusual sleep duration, to find the process by
    with pytest.raises(WorkspaceError, match=r"timed out after 0\.3s"):
        run_git(["slow"], repo, timeout_seconds=0.3, config={"alias.slow": f"!sleep {marker}"})
    deadline = time.monotonic() + 5
    while _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_with(marker) == []


def test_commits_work_without_any_git_identity(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, git: Callable[..., str]
) -> None:
    empty_home = tmp_path / "empty-home"
    empty_home.mkdir()
    monkeypatch.setenv("HOME", str(empty_home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("GIT_CONFIG_GLOBAL", raising=False)
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "EMAIL"):
        monkeypatch.delenv(var, raising=False)
    (repo / "new.txt").write_text("x\n")
    run_git(["add", "new.txt"], repo)
    run_git(["commit", "--quiet", "-m", "by conductor"], repo)
    assert git(repo, "log", "-1", "--format=%an <%ae>") == f"{CONDUCTOR_NAME} <{CONDUCTOR_EMAIL}>"
