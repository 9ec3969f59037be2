"""Where a task's code comes from: a local repository, or a git URL cloned once into a cache.

``resolve_source`` checks the task's ``repo`` and ``ref`` and answers with the repository that
worktrees are made from and the exact commit to start at. Every check that can fail on the
user's input runs before anything is written under the Conductor home, so a bad task leaves
no trace.

Remote repositories are kept as bare clones in ``<home>/cache/repos/<name>-<hash>``. Upstream
branches are fetched onto the clone's own branches (``+refs/heads/*:refs/heads/*``), except
``conductor/*``: those are the task result branches that live in the cache, and a fetch never
overwrites them.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import shutil
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from claude_conductor.errors import InputError, RepoUnreadableError, WorkspaceError
from claude_conductor.git_urls import is_git_url
from claude_conductor.redaction import url_without_secrets
from claude_conductor.settings import ConductorSettings
from claude_conductor.system.locks import file_lock
from claude_conductor.workspaces.git import redact, run_git, try_git

__all__ = [
    "CLONE_TIMEOUT_SECONDS",
    "FETCH_TIMEOUT_SECONDS",
    "SourceRepo",
    "cache_dir_name",
    "check_local_source",
    "is_git_url",
    "resolve_source",
]

logger = logging.getLogger(__name__)

CLONE_TIMEOUT_SECONDS = 1800.0
FETCH_TIMEOUT_SECONDS = 600.0
_FETCH_REFSPECS = ("+refs/heads/*:refs/heads/*", "^refs/heads/conductor/*")
_HEX_RE = re.compile(r"^[0-9a-fA-F]{4,64}$")
_PLAIN_REF_RE = re.compile(r"^[A-Za-z0-9._/-]+$")


class SourceRepo(BaseModel):
    """The repository a task's worktree is made from, and the commit it starts at."""

    model_config = ConfigDict(frozen=True)

    path: Path = Field(
        description="The git repository worktrees are added from: the top of a local work "
        "tree, a bare repository, or Conductor's cached clone of a URL."
    )
    base_commit: str = Field(description="The full sha the task starts from.")
    ref: str | None = Field(default=None, description="The ref as the task gave it; None: HEAD.")
    is_clone: bool = Field(
        default=False, description="True when `path` is Conductor's cached clone of a URL."
    )
    git_common_dir: Path | None = Field(
        default=None,
        description="The repository's common git directory (shared by its worktrees), when "
        "already known; None: ask git.",
    )


def cache_dir_name(url: str) -> str:
    """A readable, collision-free folder name for a URL: ``<last-part>-<sha256[:12]>``."""
    normal = url.strip().rstrip("/")
    last = re.split(r"[/:]", normal)[-1]
    last = last.removesuffix(".git")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", last).strip(".-")[:40] or "repo"
    digest = hashlib.sha256(normal.encode()).hexdigest()[:12]
    return f"{safe}-{digest}"


def resolve_source(repo: str, ref: str | None, settings: ConductorSettings) -> SourceRepo:
    """Check ``repo`` and ``ref`` and return the repository and commit to work from.

    Raises ``InputError`` (exit 2) with one line naming the field, the value and the fix.
    """
    if not repo or not repo.strip():
        raise InputError(
            f"repo {repo!r} is empty: give the path of a local git repository or a git URL",
            field="repo",
            value=repo,
        )
    _check_ref_syntax(ref)
    if is_git_url(repo.strip()):
        return _resolve_url(repo.strip(), ref, settings)
    return _resolve_local(repo, ref)


def check_local_source(repo: str, ref: str | None) -> None:
    """Before submitting: a local ``repo`` exists, is a git repository and has ``ref``; raises
    ``InputError`` like ``resolve_source``. Git URLs are left to the agent's worker (it clones
    them). Reads only: nothing is created."""
    if not repo or not repo.strip() or is_git_url(repo.strip()):
        return
    _check_ref_syntax(ref)
    try:
        _resolve_local(repo, ref)
    except InputError as exc:
        # Git may refuse to read a repository owned by another user here (the docker tier's
        # repositories belong to the agents' uid): only the worker can tell then.
        if not isinstance(exc, RepoUnreadableError):
            raise
        logger.info("not checked before submitting: %s", exc)


# -- local repositories --------------------------------------------------------------------


def _resolve_local(repo: str, ref: str | None) -> SourceRepo:
    path = Path(repo).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    quick = _probe_work_tree(path, ref, repo)
    if quick is not None:
        return quick
    shown = repr(repo) if str(path) == repo else f"{repo!r} ({path})"
    if not path.exists():
        raise InputError(
            f"repo {shown} does not exist: give the path of a local git repository or a git URL",
            field="repo",
            value=repo,
        )
    if not path.is_dir():
        raise InputError(
            f"repo {shown} is a file, not a directory: give the path of a local git repository "
            "or a git URL",
            field="repo",
            value=repo,
        )
    top = _repository_top(path, repo, shown)
    base = _resolve_commit(top, ref, repo=repo, where=str(top))
    if top != path.resolve():
        logger.info("repo %r is inside the repository at %s; using that", repo, top)
    return SourceRepo(path=top, base_commit=base, ref=ref, is_clone=False)


def _probe_work_tree(path: Path, ref: str | None, repo: str) -> SourceRepo | None:
    """The common case in one git call: ``path`` is in a work tree that has ``ref``. None
    otherwise (a bare repository, a missing ref, not a repository...): the checks one by one
    then say exactly what is wrong."""
    if not path.is_dir():
        return None
    target = ref if ref is not None else "HEAD"
    probe = try_git(
        [
            "rev-parse",
            "--is-bare-repository",
            "--git-common-dir",
            "--show-toplevel",
            "--verify",
            "--quiet",
            f"{target}^{{commit}}",
        ],
        path,
    )
    lines = probe.stdout.splitlines()
    if probe.returncode != 0 or len(lines) != 4 or lines[0] != "false" or not lines[2]:
        return None
    top, commit = Path(lines[2]), lines[3].strip()
    if top != path.resolve():
        logger.info("repo %r is inside the repository at %s; using that", repo, top)
    return SourceRepo(
        path=top,
        base_commit=commit,
        ref=ref,
        is_clone=False,
        git_common_dir=(path / lines[1]).resolve(),
    )


def _repository_top(path: Path, repo: str, shown: str) -> Path:
    probe = try_git(["rev-parse", "--is-bare-repository", "--absolute-git-dir"], path)
    if probe.returncode != 0:
        if "not a git repository" in probe.stderr:
            raise InputError(
                f"repo {shown} is not a git repository: run 'git init' there or point repo at "
                "a repository",
                field="repo",
                value=repo,
            )
        raise RepoUnreadableError(
            f"git cannot use repo {shown} ({_first_line(probe.stderr)}): fix that, "
            "or point repo at another repository",
            field="repo",
            value=repo,
        )
    is_bare, git_dir = probe.stdout.splitlines()[:2]
    if is_bare == "true":
        return Path(git_dir)
    top = try_git(["rev-parse", "--show-toplevel"], path)
    if top.returncode == 0 and top.stdout:
        return Path(top.stdout)
    return Path(git_dir)  # `path` is inside a .git directory


def _check_ref_syntax(ref: str | None) -> None:
    if ref is None:
        return
    if not ref.strip() or ref.startswith("-") or any(c in ref for c in "\0\n\r"):
        raise InputError(
            f"ref {ref!r} is not a valid ref: give a branch, tag or commit, or leave ref out "
            "to use the repository's HEAD",
            field="ref",
            value=ref,
        )


def _resolve_commit(path: Path, ref: str | None, *, repo: str, where: str) -> str:
    target = ref if ref is not None else "HEAD"
    probe = try_git(["rev-parse", "--verify", "--quiet", f"{target}^{{commit}}"], path)
    if probe.returncode == 0 and probe.stdout:
        return probe.stdout.strip()
    if ref is None:
        raise InputError(
            f"repo {repo!r} has no commits on its HEAD yet: commit something first, "
            "or give a ref to start from",
            field="repo",
            value=repo,
        )
    raise InputError(
        f"ref {ref!r} not found in {where}: give a branch, tag or commit that exists "
        "(git branch -a)",
        field="ref",
        value=ref,
    )


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else "no message"


# -- git URLs: a bare clone in the cache -----------------------------------------------------


def _resolve_url(url: str, ref: str | None, settings: ConductorSettings) -> SourceRepo:
    shown = redact(url)
    cache = settings.repo_cache_dir / cache_dir_name(url)
    was_ready = _is_cache_ready(cache)
    if not was_ready:
        # First use: check the URL (and a named ref) before creating anything under home.
        _check_remote(url, ref, shown)
    cache.parent.mkdir(parents=True, exist_ok=True)
    lock = cache.parent / f"{cache.name}.lock"
    with file_lock(lock, wait_seconds=CLONE_TIMEOUT_SECONDS + 60):
        if _is_cache_ready(cache):
            if was_ready:
                _fetch(cache, url, shown)
            else:
                logger.info("another task just cloned %s; reusing %s", shown, cache)
        else:
            _clone(url, cache, shown)
        base = _resolve_cached_commit(cache, url, ref, shown)
    return SourceRepo(path=cache, base_commit=base, ref=ref, is_clone=True)


def _is_cache_ready(cache: Path) -> bool:
    if not (cache / "HEAD").is_file():
        return False
    probe = try_git(["rev-parse", "--is-bare-repository"], cache)
    return probe.returncode == 0 and probe.stdout == "true"


def _check_remote(url: str, ref: str | None, shown: str) -> None:
    probe = try_git(
        ["ls-remote", "--", url], Path(tempfile.gettempdir()), timeout_seconds=FETCH_TIMEOUT_SECONDS
    )
    if probe.returncode != 0:
        raise InputError(
            f"repo {shown!r} cannot be reached ({_first_line(probe.stderr)}): check the URL "
            f"and your access (try: git ls-remote {shown})",
            field="repo",
            value=shown,
        )
    refs = {line.split("\t", 1)[1] for line in probe.stdout.splitlines() if "\t" in line}
    if not refs:
        raise InputError(
            f"repo {shown!r} has no commits yet: push something to it first",
            field="repo",
            value=shown,
        )
    checkable = ref is not None and _PLAIN_REF_RE.match(ref) and not _HEX_RE.match(ref)
    if checkable and not refs & {ref, f"refs/{ref}", f"refs/heads/{ref}", f"refs/tags/{ref}"}:
        raise InputError(
            f"ref {ref!r} not found in {shown}: give a branch, tag or commit that exists "
            f"(git ls-remote {shown})",
            field="ref",
            value=ref,
        )


def _clone(url: str, cache: Path, shown: str) -> None:
    staging = cache.parent / f".{cache.name}.tmp-{secrets.token_hex(4)}"
    logger.info("cloning %s into %s", shown, cache)
    try:
        run_git(
            ["clone", "--bare", "--quiet", "--", url, str(staging)],
            cache.parent,
            timeout_seconds=CLONE_TIMEOUT_SECONDS,
        )
        _forget_credentials(staging, url)
        if cache.exists():  # a broken leftover (an interrupted run before the rename)
            shutil.rmtree(cache)
        staging.rename(cache)
    except WorkspaceError as exc:
        raise WorkspaceError(
            f"could not clone {shown} into {str(cache)!r}", stderr_tail=exc.stderr_tail
        ) from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _forget_credentials(cache: Path, url: str) -> None:
    """Keep no credential of the URL in the clone's config: agents work in worktrees of this
    clone and can read its config. Fetches give the full URL on the command line instead."""
    safe = url_without_secrets(url)
    if safe != url:
        run_git(["remote", "set-url", "origin", safe], cache)


def _fetch(cache: Path, url: str, shown: str) -> None:
    logger.info("fetching %s into %s", shown, cache)
    try:
        _forget_credentials(cache, url)  # a clone made by an older Conductor kept them
        run_git(
            ["fetch", "--quiet", "--force", "--tags", "--", url, *_FETCH_REFSPECS],
            cache,
            timeout_seconds=FETCH_TIMEOUT_SECONDS,
        )
    except WorkspaceError as exc:
        raise WorkspaceError(
            f"could not update the cached clone of {shown} in {str(cache)!r}; check the "
            "network and your access",
            stderr_tail=exc.stderr_tail,
        ) from exc


def _resolve_cached_commit(cache: Path, url: str, ref: str | None, shown: str) -> str:
    try:
        return _resolve_commit(cache, ref, repo=shown, where=shown)
    except InputError:
        if ref is None:
            raise
    # A commit or ref the branches do not carry (a sha, refs/pull/1/head): ask for it directly.
    fetched = try_git(
        ["fetch", "--quiet", "--", url, ref], cache, timeout_seconds=FETCH_TIMEOUT_SECONDS
    )
    if fetched.returncode == 0:
        probe = try_git(["rev-parse", "--verify", "--quiet", "FETCH_HEAD^{commit}"], cache)
        if probe.returncode == 0 and probe.stdout:
            return probe.stdout.strip()
    raise InputError(
        f"ref {ref!r} not found in {shown}: give a branch, tag or commit that exists "
        f"(git ls-remote {shown})",
        field="ref",
        value=ref,
    )
