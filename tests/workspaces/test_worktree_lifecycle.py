"""Worktrees: made on the task branch, changes committed there, the user's checkout untouched."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from claude_conductor.errors import WorkspaceError
from claude_conductor.models import DiffStats, TaskSpec
from claude_conductor.settings import ConductorSettings
from claude_conductor.workspaces import (
    Workspace,
    create_workspace,
    diff_text,
    finalize_workspace,
    remove_workspace,
    resolve_source,
)
from claude_conductor.workspaces.git import CONDUCTOR_EMAIL, CONDUCTOR_NAME

Git = Callable[..., str]


def _spec(task_id: str = "task-1") -> TaskSpec:
    return TaskSpec(id=task_id, prompt="improve things")


def _workspace(
    repo: Path, settings: ConductorSettings, task_id: str = "task-1", ref: str | None = None
) -> Workspace:
    return create_workspace(_spec(task_id), resolve_source(str(repo), ref, settings), settings)


def _edit(ws: Workspace) -> None:
    """What an agent might do: modify, add (also in a new subdirectory), delete."""
    (ws.path / "README.md").write_text("# Demo\n\nhello again\nand more\n")
    (ws.path / "src" / "app.py").unlink()
    (ws.path / "pkg" / "sub").mkdir(parents=True)
    (ws.path / "pkg" / "sub" / "mod.py").write_text("X = 1\nY = 2\n")


# -- create -----------------------------------------------------------------------------------


def test_workspace_is_a_worktree_on_the_task_branch_at_head(
    repo: Path, settings: ConductorSettings, git: Git
) -> None:
    ws = _workspace(repo, settings)
    assert ws.path == settings.workspaces_dir.resolve() / "task-1"
    assert ws.branch == "conductor/task-1"
    assert ws.base_commit == git(repo, "rev-parse", "HEAD")
    assert ws.source_path == repo
    assert git(ws.path, "symbolic-ref", "HEAD") == "refs/heads/conductor/task-1"
    assert git(ws.path, "rev-parse", "HEAD") == ws.base_commit
    assert git(ws.path, "status", "--porcelain") == ""
    assert (ws.path / "notes.txt").read_text() == "a note\n"
    # The branch lives in the user's repository.
    assert git(repo, "rev-parse", "conductor/task-1") == ws.base_commit


def test_workspace_from_a_ref_has_that_commits_files(
    repo: Path, settings: ConductorSettings, git: Git
) -> None:
    ws = _workspace(repo, settings, ref="v1")
    assert git(ws.path, "rev-parse", "HEAD") == git(repo, "rev-parse", "v1^{commit}")
    assert not (ws.path / "notes.txt").exists()
    assert (ws.path / "README.md").read_text() == "# Demo\n\nhello\n"


def test_workspace_from_a_bare_repository(
    bare_remote: Path, settings: ConductorSettings, git: Git
) -> None:
    ws = _workspace(bare_remote, settings)
    (ws.path / "new.txt").write_text("new\n")
    changes = finalize_workspace(ws, "add new", settings.results_dir / ws.task_id)
    assert git(bare_remote, "rev-parse", "conductor/task-1") == changes.head_commit


# -- finalize ---------------------------------------------------------------------------------


def test_finalize_commits_exactly_the_changed_files(
    repo: Path, settings: ConductorSettings, git: Git
) -> None:
    ws = _workspace(repo, settings)
    _edit(ws)
    changes = finalize_workspace(ws, "Agent: tidy up", settings.results_dir / ws.task_id)

    assert sorted(changes.files_changed) == ["README.md", "pkg/sub/mod.py", "src/app.py"]
    assert changes.diff_stats == DiffStats(files=3, insertions=3, deletions=2)
    assert changes.head_commit != ws.base_commit
    assert git(repo, "rev-parse", "conductor/task-1") == changes.head_commit
    assert git(repo, "rev-parse", f"{changes.head_commit}~1") == ws.base_commit
    assert git(repo, "log", "-1", "--format=%s", "conductor/task-1") == "Agent: tidy up"
    author = git(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>", "conductor/task-1")
    assert author == f"{CONDUCTOR_NAME} <{CONDUCTOR_EMAIL}>|{CONDUCTOR_NAME} <{CONDUCTOR_EMAIL}>"
    committed = git(repo, "diff", "--name-only", ws.base_commit, changes.head_commit)
    assert sorted(committed.splitlines()) == sorted(changes.files_changed)
    assert git(ws.path, "status", "--porcelain") == ""


def test_patch_applies_on_the_base_and_gives_the_same_tree(
    repo: Path, settings: ConductorSettings, tmp_path: Path, git: Git
) -> None:
    ws = _workspace(repo, settings)
    _edit(ws)
    (ws.path / "blob.bin").write_bytes(bytes(range(256)) * 4)
    changes = finalize_workspace(ws, "edit", tmp_path / "results" / ws.task_id)
    assert changes.patch_path == tmp_path / "results" / ws.task_id / "changes.patch"
    assert changes.patch_path.is_file()

    check = tmp_path / "check"
    git(tmp_path, "clone", "--quiet", str(repo), str(check))
    git(check, "checkout", "--quiet", ws.base_commit)
    git(check, "apply", "--check", str(changes.patch_path))
    git(check, "apply", "--index", str(changes.patch_path))
    assert git(check, "write-tree") == git(repo, "rev-parse", f"{changes.head_commit}^{{tree}}")


def test_binary_files_and_renames(repo: Path, settings: ConductorSettings, git: Git) -> None:
    ws = _workspace(repo, settings)
    (ws.path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    (ws.path / "docs" / "guide.md").rename(ws.path / "docs" / "handbook.md")
    changes = finalize_workspace(ws, "rename", settings.results_dir / ws.task_id)
    assert sorted(changes.files_changed) == ["docs/handbook.md", "image.png"]
    assert changes.diff_stats == DiffStats(files=2, insertions=0, deletions=0)
    assert "rename from docs/guide.md" in diff_text(repo, ws.base_commit, changes.head_commit)


def test_nothing_changed_means_no_commit_and_no_patch(
    repo: Path, settings: ConductorSettings, git: Git
) -> None:
    ws = _workspace(repo, settings)
    (ws.path / "debug.log").write_text("ignored by the repository's .gitignore\n")
    changes = finalize_workspace(ws, "nothing", settings.results_dir / ws.task_id)
    assert changes.head_commit == ws.base_commit
    assert changes.files_changed == []
    assert changes.diff_stats == DiffStats()
    assert changes.patch_path is None
    assert not (settings.results_dir / ws.task_id / "changes.patch").exists()
    assert git(repo, "rev-parse", "conductor/task-1") == ws.base_commit


def test_conductors_own_and_ignored_files_are_never_committed(
    repo: Path, settings: ConductorSettings, git: Git
) -> None:
    ws = _workspace(repo, settings)
    (ws.path / ".conductor").mkdir()
    (ws.path / ".conductor" / "transcript.jsonl").write_text("{}\n")
    (ws.path / "run.log").write_text("ignored by the repository's .gitignore\n")
    (ws.path / "src" / "__pycache__").mkdir()
    (ws.path / "src" / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\x00pyc")
    (ws.path / "stray.pyc").write_bytes(b"\x00pyc")
    (ws.path / "new.py").write_text("print('hi')\n")
    changes = finalize_workspace(ws, "edit", settings.results_dir / ws.task_id)
    assert changes.files_changed == ["new.py"]
    tree = git(repo, "ls-tree", "-r", "--name-only", "conductor/task-1").splitlines()
    assert "new.py" in tree
    assert [p for p in tree if "conductor" in p or p.endswith((".log", ".pyc"))] == []


def test_callers_can_exclude_more(repo: Path, settings: ConductorSettings) -> None:
    ws = _workspace(repo, settings)
    (ws.path / "scratch").mkdir()
    (ws.path / "scratch" / "notes.md").write_text("agent's scratch\n")
    (ws.path / "docs" / "draft.tmp").write_text("tmp\n")
    (ws.path / "new.py").write_text("print('hi')\n")
    changes = finalize_workspace(
        ws, "edit", settings.results_dir / ws.task_id, exclude=("scratch", "**/*.tmp")
    )
    assert changes.files_changed == ["new.py"]


def test_the_agents_own_commits_are_included(
    repo: Path, settings: ConductorSettings, git: Git
) -> None:
    ws = _workspace(repo, settings)
    (ws.path / "one.txt").write_text("1\n")
    git(ws.path, "add", "one.txt")
    git(ws.path, "commit", "--quiet", "-m", "agent committed this itself")
    (ws.path / "two.txt").write_text("2\n")
    changes = finalize_workspace(ws, "the rest", settings.results_dir / ws.task_id)
    assert sorted(changes.files_changed) == ["one.txt", "two.txt"]
    assert git(repo, "rev-list", "--count", f"{ws.base_commit}..conductor/task-1") == "2"


@pytest.mark.parametrize(
    "move", [("switch", "--quiet", "-c", "elsewhere"), ("checkout", "--quiet", "--detach")]
)
def test_an_agent_that_left_the_task_branch_is_warned_about(
    repo: Path,
    settings: ConductorSettings,
    git: Git,
    move: tuple[str, ...],
    caplog: pytest.LogCaptureFixture,
) -> None:
    ws = _workspace(repo, settings)
    git(ws.path, *move)
    (ws.path / "one.txt").write_text("1\n")
    with caplog.at_level("WARNING", logger="claude_conductor.workspaces.worktree"):
        changes = finalize_workspace(ws, "off the branch", settings.results_dir / ws.task_id)
    assert changes.files_changed == ["one.txt"]
    shown = "refs/heads/elsewhere" if move[0] == "switch" else "detached"
    assert f"no longer on conductor/task-1 (HEAD: {shown})" in caplog.text
    assert git(repo, "rev-parse", "conductor/task-1") == ws.base_commit  # not on the branch


def test_repository_hooks_and_signing_do_not_block_the_commit(
    repo: Path, settings: ConductorSettings, git: Git
) -> None:
    hooks = repo / ".git" / "hooks"
    for name in ("pre-commit", "commit-msg", "post-commit"):
        (hooks / name).write_text("#!/bin/sh\necho hook ran >> /dev/stderr\nexit 1\n")
        (hooks / name).chmod(0o755)
    git(repo, "config", "commit.gpgsign", "true")
    git(repo, "config", "gpg.program", "/bin/false")
    ws = _workspace(repo, settings)
    (ws.path / "new.txt").write_text("x\n")
    changes = finalize_workspace(ws, "# a markdown title\n\nbody", settings.results_dir / "t")
    assert changes.files_changed == ["new.txt"]
    assert git(repo, "log", "-1", "--format=%B", "conductor/task-1") == "# a markdown title\n\nbody"


# -- the user's checkout ------------------------------------------------------------------------


def _user_state(repo: Path, git: Git) -> tuple[str, ...]:
    return (
        git(repo, "rev-parse", "HEAD"),
        git(repo, "symbolic-ref", "HEAD"),
        git(repo, "status", "--porcelain=v1", "--untracked-files=all"),
        git(repo, "diff"),
        git(repo, "diff", "--cached"),
        (repo / "README.md").read_text(),
    )


def test_users_checkout_index_and_changes_are_untouched(
    repo: Path, settings: ConductorSettings, git: Git
) -> None:
    (repo / "README.md").write_text("my uncommitted work\n")
    (repo / "staged.txt").write_text("staged\n")
    git(repo, "add", "staged.txt")
    (repo / "untracked.txt").write_text("mine\n")
    before = _user_state(repo, git)

    ws = _workspace(repo, settings)
    _edit(ws)
    changes = finalize_workspace(ws, "agent", settings.results_dir / ws.task_id)
    remove_workspace(ws)

    assert _user_state(repo, git) == before
    assert (repo / "README.md").read_text() == "my uncommitted work\n"
    # The task started from the committed HEAD, not from the uncommitted work.
    assert "my uncommitted work" not in diff_text(repo, ws.base_commit, changes.head_commit)


# -- remove, retry ------------------------------------------------------------------------------


def test_remove_keeps_the_branch(repo: Path, settings: ConductorSettings, git: Git) -> None:
    ws = _workspace(repo, settings)
    _edit(ws)
    changes = finalize_workspace(ws, "agent", settings.results_dir / ws.task_id)
    remove_workspace(ws)
    assert not ws.path.exists()
    assert str(ws.path) not in git(repo, "worktree", "list")
    assert git(repo, "rev-parse", "conductor/task-1") == changes.head_commit
    remove_workspace(ws)  # a second call is harmless
    remove_workspace(ws, keep_branch=False)
    assert git(repo, "branch", "--list", "conductor/task-1") == ""


def test_retry_starts_over_on_the_same_branch(
    repo: Path, settings: ConductorSettings, git: Git
) -> None:
    first = _workspace(repo, settings)
    _edit(first)
    (first.path / "half-done.txt").write_text("uncommitted leftovers\n")
    finalize_workspace(first, "attempt 1", settings.results_dir / first.task_id)

    second = _workspace(repo, settings)  # the worktree of attempt 1 is still there
    assert second.path == first.path
    assert git(second.path, "rev-parse", "HEAD") == second.base_commit
    assert git(repo, "rev-parse", "conductor/task-1") == second.base_commit
    assert git(second.path, "status", "--porcelain") == ""
    assert not (second.path / "half-done.txt").exists()
    assert (second.path / "src" / "app.py").exists()


def test_retry_after_the_worktree_folder_was_deleted(
    repo: Path, settings: ConductorSettings, git: Git
) -> None:
    first = _workspace(repo, settings)
    shutil.rmtree(first.path)
    second = _workspace(repo, settings, ref="old")
    assert git(second.path, "rev-parse", "HEAD") == git(repo, "rev-parse", "old")


def test_branch_checked_out_by_the_user_is_not_taken_over(
    repo: Path, settings: ConductorSettings, git: Git
) -> None:
    ws = _workspace(repo, settings)
    remove_workspace(ws)
    git(repo, "checkout", "--quiet", "conductor/task-1")
    with pytest.raises(WorkspaceError, match="is checked out at"):
        _workspace(repo, settings)
    assert git(repo, "symbolic-ref", "HEAD") == "refs/heads/conductor/task-1"


# -- many at once -----------------------------------------------------------------------------


def test_six_workspaces_on_one_repository_at_once(
    repo: Path, settings: ConductorSettings, git: Git
) -> None:
    ids = [f"par-{n}" for n in range(6)]

    def run_task(task_id: str) -> tuple[Workspace, str]:
        ws = _workspace(repo, settings, task_id)
        (ws.path / f"{task_id}.txt").write_text(f"{task_id}\n")
        changes = finalize_workspace(ws, task_id, settings.results_dir / task_id)
        remove_workspace(ws)
        return ws, changes.head_commit

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(run_task, ids))

    assert {ws.branch for ws, _ in results} == {f"conductor/{i}" for i in ids}
    for ws, head in results:
        assert git(repo, "rev-parse", ws.branch) == head
        files = git(repo, "diff", "--name-only", ws.base_commit, head)
        assert files == f"{ws.task_id}.txt"
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_diff_text_shows_the_change(repo: Path, settings: ConductorSettings) -> None:
    ws = _workspace(repo, settings)
    (ws.path / "README.md").write_text("# Demo\n\ngoodbye\n")
    changes = finalize_workspace(ws, "bye", settings.results_dir / ws.task_id)
    text = diff_text(repo, ws.base_commit, changes.head_commit)
    assert "-hello again" in text and "+goodbye" in text
    assert diff_text(repo, ws.base_commit, ws.base_commit) == ""


def test_git_missing_from_path_is_a_clear_error(
    repo: Path, settings: ConductorSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = resolve_source(str(repo), None, settings)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(WorkspaceError, match="git is not installed"):
        create_workspace(_spec(), source, settings)
