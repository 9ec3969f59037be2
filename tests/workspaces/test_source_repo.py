"""resolve_source: local paths and git URLs, and one clear InputError for every bad input."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from claude_conductor.errors import InputError
from claude_conductor.models import TaskSpec
from claude_conductor.settings import ConductorSettings
from claude_conductor.workspaces import (
    create_workspace,
    finalize_workspace,
    is_git_url,
    resolve_source,
)
from claude_conductor.workspaces.source import cache_dir_name

Git = Callable[..., str]

# -- local repositories ---------------------------------------------------------------------


def test_local_repo_resolves_to_head(repo: Path, settings: ConductorSettings, git: Git) -> None:
    source = resolve_source(str(repo), None, settings)
    assert source.path == repo
    assert source.base_commit == git(repo, "rev-parse", "HEAD")
    assert source.ref is None
    assert source.is_clone is False
    assert not settings.home.exists()


@pytest.mark.parametrize("ref", ["v1", "old", "main~1"])
def test_ref_resolves_to_its_commit(
    ref: str, repo: Path, settings: ConductorSettings, git: Git
) -> None:
    source = resolve_source(str(repo), ref, settings)
    assert source.base_commit == git(repo, "rev-parse", "v1^{commit}")
    assert source.ref == ref


def test_a_commit_sha_is_a_ref(repo: Path, settings: ConductorSettings, git: Git) -> None:
    sha = git(repo, "rev-parse", "v1")
    assert resolve_source(str(repo), sha[:10], settings).base_commit == sha


def test_path_inside_a_repo_uses_its_top_level(repo: Path, settings: ConductorSettings) -> None:
    assert resolve_source(str(repo / "src"), None, settings).path == repo


def test_relative_path_resolves_against_the_current_directory(
    repo: Path, settings: ConductorSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo.parent)
    assert resolve_source(repo.name, None, settings).path == repo
    monkeypatch.chdir(repo / "docs")
    assert resolve_source(".", None, settings).path == repo


def test_bare_repository_is_accepted(
    bare_remote: Path, repo: Path, settings: ConductorSettings, git: Git
) -> None:
    source = resolve_source(str(bare_remote), "old", settings)
    assert source.path == bare_remote
    assert source.base_commit == git(repo, "rev-parse", "old")


# -- bad input: one line, the value, the fix; nothing created under home -------------------------


def _bad_local_cases(tmp_path: Path, repo: Path, git: Git) -> dict[str, tuple[str, str | None]]:
    plain = tmp_path / "plain"
    plain.mkdir()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "--quiet")
    return {
        "missing path": (str(tmp_path / "nope"), None),
        "a file": (str(a_file), None),
        "not a repository": (str(plain), None),
        "no commits": (str(empty), None),
        "unknown ref": (str(repo), "nosuch"),
        "ref like an option": (str(repo), "--output=/tmp/x"),
        "blank ref": (str(repo), "  "),
        "empty repo string": ("", None),
        "missing file:// url": ((tmp_path / "gone.git").as_uri(), None),
    }


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing path", "does not exist: give the path of a local git repository or a git URL"),
        ("a file", "is a file, not a directory"),
        ("not a repository", "is not a git repository: run 'git init' there"),
        ("no commits", "has no commits on its HEAD yet"),
        ("unknown ref", "not found in"),
        ("ref like an option", "is not a valid ref"),
        ("blank ref", "is not a valid ref"),
        ("empty repo string", "repo '' is empty"),
        ("missing file:// url", "cannot be reached"),
    ],
)
def test_bad_input_is_one_clear_input_error(
    case: str,
    expected: str,
    repo: Path,
    tmp_path: Path,
    settings: ConductorSettings,
    git: Git,
) -> None:
    repo_arg, ref = _bad_local_cases(tmp_path, repo, git)[case]
    with pytest.raises(InputError) as info:
        resolve_source(repo_arg, ref, settings)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message
    assert info.value.exit_code == 2
    shown = ref if info.value.field == "ref" else repo_arg
    assert info.value.field in {"repo", "ref"}
    assert repr(shown) in message
    assert not settings.home.exists()


def test_bad_ref_message_names_the_repository(repo: Path, settings: ConductorSettings) -> None:
    with pytest.raises(InputError) as info:
        resolve_source(str(repo), "nosuch", settings)
    assert str(info.value) == (
        f"ref 'nosuch' not found in {repo}: give a branch, tag or commit that exists "
        "(git branch -a)"
    )


def test_relative_missing_path_shows_where_it_looked(
    tmp_path: Path, settings: ConductorSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=r"repo 'nope' \(.*/nope\) does not exist"):
        resolve_source("nope", None, settings)


def test_url_with_unknown_branch_creates_nothing(
    bare_remote: Path, settings: ConductorSettings
) -> None:
    with pytest.raises(InputError) as info:
        resolve_source(bare_remote.as_uri(), "no-such-branch", settings)
    assert "ref 'no-such-branch' not found in file://" in str(info.value)
    assert not settings.home.exists()


# -- git URLs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("repo_arg", "expected"),
    [
        ("https://github.com/acme/app.git", True),
        ("http://host/x", True),
        ("ssh://git@host:22/x.git", True),
        ("git@github.com:acme/app.git", True),
        ("file:///srv/git/app.git", True),
        ("git://host/x", True),
        ("/home/me/app", False),
        ("./app", False),
        ("app", False),
        ("C:/x", False),
    ],
)
def test_is_git_url(repo_arg: str, expected: bool) -> None:
    assert is_git_url(repo_arg) is expected


def test_cache_dir_name_is_readable_and_distinct() -> None:
    a = cache_dir_name("https://github.com/acme/app.git")
    b = cache_dir_name("git@github.com:acme/app.git")
    assert a.startswith("app-") and b.startswith("app-")
    assert a != b
    assert cache_dir_name("https://github.com/acme/app.git/") == a


def test_url_is_cloned_once_then_fetched(
    bare_remote: Path, repo: Path, settings: ConductorSettings, git: Git
) -> None:
    url = bare_remote.as_uri()
    first = resolve_source(url, None, settings)
    assert first.is_clone is True
    assert first.path == settings.repo_cache_dir / cache_dir_name(url)
    assert first.base_commit == git(repo, "rev-parse", "HEAD")
    assert git(first.path, "rev-parse", "--is-bare-repository") == "true"
    marker = first.path / "clone-marker"
    marker.write_text("the same clone\n")
    inode = first.path.stat().st_ino

    # A new upstream commit; the second use fetches it into the same clone.
    (repo / "later.txt").write_text("later\n")
    git(repo, "add", "later.txt")
    git(repo, "commit", "--quiet", "-m", "later")
    git(repo, "push", "--quiet", str(bare_remote), "main")
    second = resolve_source(url, "main", settings)
    assert second.path == first.path
    assert marker.exists() and first.path.stat().st_ino == inode
    assert second.base_commit == git(repo, "rev-parse", "HEAD")
    assert resolve_source(url, "v1", settings).base_commit == git(repo, "rev-parse", "v1^{}")
    assert sorted(p.name for p in settings.repo_cache_dir.iterdir()) == sorted(
        [first.path.name, f"{first.path.name}.lock"]
    )


def test_url_sha_ref_resolves(
    bare_remote: Path, repo: Path, settings: ConductorSettings, git: Git
) -> None:
    sha = git(repo, "rev-parse", "old")
    assert resolve_source(bare_remote.as_uri(), sha, settings).base_commit == sha


def test_concurrent_first_uses_clone_once(
    bare_remote: Path, repo: Path, settings: ConductorSettings, git: Git
) -> None:
    url = bare_remote.as_uri()
    with ThreadPoolExecutor(max_workers=4) as pool:
        sources = list(pool.map(lambda _: resolve_source(url, None, settings), range(4)))
    assert {s.path for s in sources} == {settings.repo_cache_dir / cache_dir_name(url)}
    assert {s.base_commit for s in sources} == {git(repo, "rev-parse", "HEAD")}
    leftovers = [p.name for p in settings.repo_cache_dir.iterdir() if ".tmp-" in p.name]
    assert leftovers == []


def test_fetch_never_touches_result_branches_in_the_cache(
    bare_remote: Path, settings: ConductorSettings, git: Git
) -> None:
    url = bare_remote.as_uri()
    source = resolve_source(url, None, settings)
    spec = TaskSpec(id="remote-task", prompt="edit")
    ws = create_workspace(spec, source, settings)
    (ws.path / "README.md").write_text("changed by the agent\n")
    changes = finalize_workspace(ws, "agent edit", settings.results_dir / spec.id)
    # Upstream happens to have a branch of the same name: the task's result still wins.
    git(bare_remote, "branch", "conductor/remote-task", "old")
    resolve_source(url, None, settings)
    assert git(source.path, "rev-parse", "conductor/remote-task") == changes.head_commit


def test_a_url_token_is_used_but_never_kept_in_the_clone(
    bare_remote: Path,
    repo: Path,
    settings: ConductorSettings,
    git: Git,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Agents work in worktrees of the cached clone and can read its config: a token in the
    task's URL serves the clone and every later fetch, and is stored nowhere in the clone."""
    url = "https://ci-bot:ghp_s3cretT0ken@git.example.invalid/team/app.git"
    gitconfig = tmp_path / "gitconfig"  # the https URL, token included, leads to the local remote
    gitconfig.write_text(f'[url "{bare_remote.as_uri()}"]\n\tinsteadOf = {url}\n')
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(gitconfig))
    first = resolve_source(url, None, settings)
    assert first.base_commit == git(repo, "rev-parse", "HEAD")
    (repo / "later.txt").write_text("later\n")
    git(repo, "add", "later.txt")
    git(repo, "commit", "--quiet", "-m", "later")
    git(repo, "push", "--quiet", str(bare_remote), "main")
    assert resolve_source(url, "main", settings).base_commit == git(repo, "rev-parse", "HEAD")
    stored = [p for p in first.path.rglob("*") if p.is_file() and b"s3cretT0ken" in p.read_bytes()]
    assert stored == []
    assert git(first.path, "remote", "get-url", "origin") == (
        "https://git.example.invalid/team/app.git"
    )
