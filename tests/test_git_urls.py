"""One idea of a git URL: an scp-style URL given to the CLI or a task file stays a URL
(it used to become ``<cwd>/deploy@git.example.com:team/app.git``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from claude_conductor.cli.run import build_spec
from claude_conductor.git_urls import is_git_url
from claude_conductor.taskfile import load_task_file
from claude_conductor.workspaces import source

SCP = "deploy@git.example.com:team/app.git"


@pytest.mark.parametrize(
    ("repo", "expected"),
    [
        (SCP, True),
        ("git@github.com:acme/app.git", True),
        ("github.com:acme/app.git", True),
        ("ssh://deploy@git.example.com:2222/team/app.git", True),
        ("git+ssh://host/x", True),
        ("HTTPS://host/x.git", True),
        ("[::1]:team/app.git", True),
        ("C:/x", False),
        ("notes:v2", False),
        ("./deploy@host:x", False),
        ("team/deploy@host:x", False),
        ("/srv/app", False),
    ],
)
def test_is_git_url(repo: str, expected: bool) -> None:
    assert is_git_url(repo) is expected
    assert source.is_git_url(repo) is expected


def test_cli_repo_flag_keeps_an_scp_url() -> None:
    spec = build_spec(None, {"prompt": "hi", "repo": SCP})
    assert spec.repo == SCP


def test_cli_repo_flag_over_a_task_file_keeps_an_scp_url(tmp_path: Path) -> None:
    task = tmp_path / "task.yaml"
    task.write_text("prompt: hi\nrepo: .\n")
    assert build_spec(task, {"repo": SCP}).repo == SCP


def test_task_file_keeps_an_scp_url_and_resolves_a_path(tmp_path: Path) -> None:
    task = tmp_path / "task.yaml"
    task.write_text(f"prompt: hi\nrepo: {SCP}\n")
    assert load_task_file(task).repo == SCP
    task.write_text("prompt: hi\nrepo: app\n")
    assert load_task_file(task).repo == str(tmp_path / "app")
