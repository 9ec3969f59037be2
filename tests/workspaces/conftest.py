"""Real git repositories in temp dirs for the workspace tests."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from claude_conductor.settings import ConductorSettings

# The tests' own git calls (making repositories, checking results) use a fixed identity and
# never sign, so they work on machines with no git configuration.
_TEST_CONFIG = (
    "-c", "user.name=Test User",
    "-c", "user.email=test@example.com",
    "-c", "commit.gpgsign=false",
    "-c", "tag.gpgsign=false",
    "-c", "init.defaultBranch=main",
)  # fmt: skip


def run(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *_TEST_CONFIG, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed in {cwd}: {done.stderr}")
    return done.stdout.rstrip("\n")


@pytest.fixture(autouse=True)
def _git_stays_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Git never looks above tmp_path for a repository (a dir in tmp is "not a repository"
    even on a machine whose / is a git work tree)."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))


@pytest.fixture
def git() -> Callable[..., str]:
    """``git(cwd, *args) -> stdout``; fails the test when git fails."""
    return run


@pytest.fixture
def settings(tmp_path: Path) -> ConductorSettings:
    return ConductorSettings(home=tmp_path / "home")


@pytest.fixture
def make_repo(tmp_path: Path) -> Callable[..., Path]:
    """Make a work-tree repository with two commits:

    - commit 1 (tag ``v1``, branch ``old``): README.md, src/app.py, docs/guide.md
    - commit 2 (``main``, HEAD): README.md changed, notes.txt added
    """

    def make(name: str = "repo") -> Path:
        repo = tmp_path / name
        (repo / "src").mkdir(parents=True)
        (repo / "docs").mkdir()
        run(repo, "init", "--quiet")
        (repo / "README.md").write_text("# Demo\n\nhello\n")
        (repo / "src" / "app.py").write_text("def main():\n    return 1\n")
        (repo / "docs" / "guide.md").write_text("line one\nline two\nline three\n")
        (repo / ".gitignore").write_text("*.log\n")
        run(repo, "add", "-A")
        run(repo, "commit", "--quiet", "-m", "first")
        run(repo, "tag", "v1")
        run(repo, "branch", "old")
        (repo / "README.md").write_text("# Demo\n\nhello again\n")
        (repo / "notes.txt").write_text("a note\n")
        run(repo, "add", "-A")
        run(repo, "commit", "--quiet", "-m", "second")
        return repo

    return make


@pytest.fixture
def repo(make_repo: Callable[..., Path]) -> Path:
    return make_repo()


@pytest.fixture
def bare_remote(repo: Path, tmp_path: Path) -> Path:
    """A bare copy of ``repo`` to use as a remote (reached by a file:// URL)."""
    remote = tmp_path / "remote.git"
    run(tmp_path, "clone", "--quiet", "--bare", str(repo), str(remote))
    return remote
