"""Push protection: a change that adds a configured secret is not committed, the files stay."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from claude_conductor.models import TaskSpec
from claude_conductor.settings import ConductorSettings
from claude_conductor.workspaces import create_workspace, finalize_workspace, resolve_source
from claude_conductor.workspaces.worktree import PATCH_FILE_NAME, Workspace

Git = Callable[..., str]
KEY = "sk-live-abcdefghijklmnop0123"
SECRETS = {"ANTHROPIC_API_KEY": KEY, "agent.extra_env.NPM_TOKEN": "npm_0123456789abcdef"}


def _workspace(repo: Path, settings: ConductorSettings) -> Workspace:
    spec = TaskSpec(id="task-1", prompt="improve things")
    return create_workspace(spec, resolve_source(str(repo), None, settings), settings)


def test_a_change_with_a_secret_is_not_committed_and_names_file_and_secret(
    repo: Path, settings: ConductorSettings, git: Git, tmp_path: Path
) -> None:
    ws = _workspace(repo, settings)
    (ws.path / "README.md").write_text("# Demo\n\nhello again\nmore\n")
    (ws.path / "src" / "config.py").write_text(f'API_KEY = "{KEY}"\n')
    out = tmp_path / "out"
    (out).mkdir()
    (out / PATCH_FILE_NAME).write_text("from an earlier attempt\n")

    changes = finalize_workspace(ws, "msg", out, secrets=SECRETS)

    assert changes.withheld_files == ["src/config.py"]
    assert changes.withheld_reason is not None
    assert "src/config.py (the value of ANTHROPIC_API_KEY)" in changes.withheld_reason
    assert KEY not in changes.withheld_reason
    assert changes.head_commit == ws.base_commit
    assert changes.files_changed == [] and changes.patch_path is None
    assert not (out / PATCH_FILE_NAME).exists()
    assert git(ws.path, "rev-parse", "HEAD") == ws.base_commit
    assert KEY not in git(repo, "log", "--all", "-p")
    # Nothing is staged, and the work is still in the worktree to review.
    assert git(ws.path, "diff", "--cached", "--name-only") == ""
    assert KEY in (ws.path / "src" / "config.py").read_text()
    assert "more" in (ws.path / "README.md").read_text()


def test_the_agents_own_commit_with_a_secret_is_undone_on_the_branch(
    repo: Path, settings: ConductorSettings, git: Git, tmp_path: Path
) -> None:
    ws = _workspace(repo, settings)
    (ws.path / "token.txt").write_text("npm_0123456789abcdef\n")
    git(ws.path, "add", "-A")
    git(ws.path, "commit", "-q", "-m", "agent commit")

    changes = finalize_workspace(ws, "msg", tmp_path / "out", secrets=SECRETS)

    assert changes.withheld_files == ["token.txt"]
    assert "agent.extra_env.NPM_TOKEN" in (changes.withheld_reason or "")
    assert git(repo, "rev-parse", ws.branch) == ws.base_commit


def test_a_secret_already_in_the_base_does_not_block_other_edits(
    repo: Path, settings: ConductorSettings, git: Git, tmp_path: Path
) -> None:
    (repo / "fixture.txt").write_text(f"key={KEY}\nline two\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "a test fixture the user committed")
    ws = _workspace(repo, settings)
    (ws.path / "fixture.txt").write_text(f"key={KEY}\nline two changed\n")

    changes = finalize_workspace(ws, "msg", tmp_path / "out", secrets=SECRETS)

    assert changes.withheld_files == []
    assert changes.files_changed == ["fixture.txt"]


def test_without_secrets_configured_everything_is_committed(
    repo: Path, settings: ConductorSettings, tmp_path: Path
) -> None:
    ws = _workspace(repo, settings)
    (ws.path / "config.py").write_text(f'API_KEY = "{KEY}"\n')
    changes = finalize_workspace(ws, "msg", tmp_path / "out")
    assert changes.files_changed == ["config.py"] and changes.withheld_files == []
