"""Each task gets its own git worktree on its own branch, ``conductor/<task-id>``.

The worktree is added from the *source* repository, so the result branch lands where the user
can ``git log conductor/<id>``; the user's own checkout, index and working tree are never touched.
Worktree bookkeeping (add, remove, prune) is serialized per source repository with a file lock
in its git directory, ``<git-common-dir>/conductor.lock``; checking the files out happens after
the lock is released, so tasks on one repository populate their worktrees in parallel.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from claude_conductor.errors import WorkspaceError
from claude_conductor.models import DiffStats, TaskSpec
from claude_conductor.settings import ConductorSettings
from claude_conductor.system.locks import file_lock
from claude_conductor.workspaces.git import run_git, run_git_bytes, try_git
from claude_conductor.workspaces.source import SourceRepo

__all__ = [
    "CHECKOUT_TIMEOUT_SECONDS",
    "DEFAULT_EXCLUDES",
    "PATCH_FILE_NAME",
    "Workspace",
    "WorkspaceChanges",
    "create_workspace",
    "diff_text",
    "finalize_workspace",
    "remove_workspace",
]

logger = logging.getLogger(__name__)

CHECKOUT_TIMEOUT_SECONDS = 900.0
PATCH_FILE_NAME = "changes.patch"
DEFAULT_EXCLUDES: tuple[str, ...] = (".conductor", "**/__pycache__", "**/*.pyc")
"""Never committed: Conductor's own folder, and the bytecode an agent's or a verify command's
test run leaves behind in repositories that do not ignore it. Git glob patterns from the top of
the repository (``**/`` matches any folder); a folder excludes everything in it."""

_MAX_MESSAGE_CHARS = 60_000
_LOCK_NAME = "conductor.lock"
# Machine-readable diffs whatever the user's git config says (colour, external diff tools,
# noprefix, relative): the patch must apply with a plain `git apply`.
_DIFF_FLAGS = (
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--no-relative",
    "--find-renames",
    "--src-prefix=a/",
    "--dst-prefix=b/",
)
# Conductor's commits run none of the repository's hooks and are never signed (no agent to
# type a passphrase, and a failing pre-commit hook must not lose the task's work).
_COMMIT_CONFIG = {"core.hooksPath": os.devnull, "commit.gpgsign": "false"}


class Workspace(BaseModel):
    """A task's git worktree and the branch checked out in it."""

    model_config = ConfigDict(frozen=True)

    task_id: str = Field(description="The task this workspace belongs to.")
    path: Path = Field(description="The worktree: `<home>/workspaces/<task-id>`.")
    branch: str = Field(description="The branch checked out there: `conductor/<task-id>`.")
    base_commit: str = Field(description="The commit the task started from.")
    source_path: Path = Field(description="The repository the worktree was added from.")
    git_common_dir: Path | None = Field(
        default=None,
        description="The repository's common git directory, when known (None: ask git).",
    )


class WorkspaceChanges(BaseModel):
    """What a task changed, committed on its branch."""

    model_config = ConfigDict(frozen=True)

    head_commit: str = Field(description="Tip of the branch; equals base_commit if unchanged.")
    files_changed: list[str] = Field(
        default_factory=list,
        description="Paths relative to the repository; a renamed file is listed by its new path.",
    )
    diff_stats: DiffStats = Field(default_factory=DiffStats, description="Diff size vs. base.")
    patch_path: Path | None = Field(
        default=None, description="`changes.patch` (a `git diff --binary`); None if no changes."
    )
    withheld_files: list[str] = Field(
        default_factory=list,
        description="Changed files that hold a configured secret. When any does, nothing is "
        "committed and no patch is written (like push protection); the files stay in the "
        "worktree.",
    )
    withheld_reason: str | None = Field(
        default=None, description="Why the change was not committed, naming files and secrets."
    )


# -- create ----------------------------------------------------------------------------------


def create_workspace(
    spec: TaskSpec,
    source: SourceRepo,
    settings: ConductorSettings,
    *,
    checkout_timeout_seconds: float = CHECKOUT_TIMEOUT_SECONDS,
) -> Workspace:
    """Add a worktree for ``spec`` on branch ``conductor/<id>`` at ``source.base_commit``.

    A retry of the same task (the branch or worktree already exists) starts over: the old
    worktree is removed and the branch is reset to the new base; its previous tip is logged
    and stays in the branch's reflog.
    """
    settings.workspaces_dir.mkdir(parents=True, exist_ok=True)
    ws = Workspace(
        task_id=spec.id,
        path=settings.workspaces_dir.resolve() / spec.id,
        branch=spec.branch,
        base_commit=source.base_commit,
        source_path=source.path,
        git_common_dir=source.git_common_dir or _common_dir(source.path),
    )
    with file_lock(_lock_path(ws)):
        # The common case, a task's first attempt, in one call: -b fails when the branch
        # or the folder is there already (an earlier attempt, a stale worktree), and then
        # the repository is tidied and checked first.
        if ws.path.exists() or try_git(_add_args(ws, "-b"), source.path).returncode != 0:
            run_git(["worktree", "prune"], source.path)
            _clear_previous_attempt(ws)
            run_git(_add_args(ws, "-B"), source.path)
    run_git(["reset", "--hard", "--quiet"], ws.path, timeout_seconds=checkout_timeout_seconds)
    logger.info("workspace %s on %s at %s", ws.path, ws.branch, ws.base_commit[:12])
    return ws


def _add_args(ws: Workspace, branch_flag: str) -> list[str]:
    return [
        "worktree",
        "add",
        "--quiet",
        "--no-checkout",
        branch_flag,
        ws.branch,
        str(ws.path),
        ws.base_commit,
    ]


def _common_dir(source_path: Path) -> Path:
    return (source_path / run_git(["rev-parse", "--git-common-dir"], source_path)).resolve()


def _lock_path(ws: Workspace) -> Path:
    return (ws.git_common_dir or _common_dir(ws.source_path)) / _LOCK_NAME


def _worktrees(source_path: Path) -> list[tuple[Path, str | None]]:
    """(path, branch ref or None) of every worktree registered in the repository."""
    out = run_git(["worktree", "list", "--porcelain"], source_path)
    entries: list[tuple[Path, str | None]] = []
    path: Path | None = None
    branch: str | None = None
    for line in [*out.splitlines(), ""]:
        if not line:  # a blank line ends an entry
            if path is not None:
                entries.append((path, branch))
            path, branch = None, None
        elif line.startswith("worktree "):
            path = Path(line.removeprefix("worktree "))
        elif line.startswith("branch "):
            branch = line.removeprefix("branch ")
    return entries


def _same_path(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _clear_previous_attempt(ws: Workspace) -> None:
    """Make room for the worktree; called with the repository's lock held."""
    ref = f"refs/heads/{ws.branch}"
    for path, branch in _worktrees(ws.source_path):
        if _same_path(path, ws.path):
            logger.warning("removing the worktree of an earlier attempt at %s", path)
            run_git(["worktree", "remove", "--force", "--force", str(path)], ws.source_path)
        elif branch == ref:
            raise WorkspaceError(
                f"branch {ws.branch!r} is checked out at {str(path)!r}: switch that checkout to "
                f"another branch (or `git worktree remove` it) and run task {ws.task_id!r} again"
            )
    if ws.path.exists():  # a folder of ours the repository no longer knows about
        shutil.rmtree(ws.path)
    old = try_git(["rev-parse", "--verify", "--quiet", ref], ws.source_path)
    if old.returncode == 0 and old.stdout:
        logger.warning(
            "task %s ran before: branch %s (was %s) starts again from %s",
            ws.task_id,
            ws.branch,
            old.stdout[:12],
            ws.base_commit[:12],
        )


# -- finalize ----------------------------------------------------------------------------------


def finalize_workspace(
    ws: Workspace,
    message: str,
    patch_dir: Path,
    *,
    exclude: Sequence[str] = DEFAULT_EXCLUDES,
    secrets: Mapping[str, str] | None = None,
) -> WorkspaceChanges:
    """Commit everything changed in the worktree to its branch and describe the changes.

    Nothing is committed when nothing changed. Files matching ``exclude`` (git glob patterns,
    see ``DEFAULT_EXCLUDES``) and files the repository ignores are never committed. Writes
    ``patch_dir/changes.patch``, the whole diff against the base (``git apply`` takes it there).

    ``secrets`` (name -> value) are never committed: when a line the change adds holds one,
    nothing is committed (the branch stays at the base, even if the agent committed), no patch
    is written, and ``withheld_files``/``withheld_reason`` say which files hold which secret.
    """
    pathspec = [".", *(f":(exclude,glob){p}" for p in exclude)]
    run_git(["add", "--all", "--", *pathspec], ws.path, timeout_seconds=CHECKOUT_TIMEOUT_SECONDS)
    patch = patch_dir / PATCH_FILE_NAME
    findings = _secret_findings(ws, secrets or {})
    if findings:
        run_git(["reset", "--quiet", ws.base_commit], ws.path)  # unstage, undo agent commits
        patch.unlink(missing_ok=True)
        reason = _withheld_reason(ws, findings)
        logger.warning("task %s: %s", ws.task_id, reason)
        return WorkspaceChanges(
            head_commit=ws.base_commit, withheld_files=sorted(findings), withheld_reason=reason
        )
    staged = try_git(["diff", "--cached", "--quiet"], ws.path)
    if staged.returncode == 1:
        text = message.strip() or f"conductor: task {ws.task_id}"
        run_git(
            [
                "commit",
                "--quiet",
                "--no-verify",
                "--cleanup=whitespace",
                "-m",
                text[:_MAX_MESSAGE_CHARS],
            ],
            ws.path,
            config=_COMMIT_CONFIG,
        )
    elif staged.returncode != 0:
        raise WorkspaceError(
            f"could not inspect the changes in {str(ws.path)!r}", stderr_tail=staged.stderr
        )
    head = _head(ws)
    files, stats = _numstat(ws.path, ws.base_commit, head)
    if not files:
        patch.unlink(missing_ok=True)  # from an earlier attempt
        return WorkspaceChanges(head_commit=head, diff_stats=stats)
    patch_dir.mkdir(parents=True, exist_ok=True)
    run_git(
        [
            "diff",
            *_DIFF_FLAGS,
            "--binary",
            "--full-index",
            f"--output={patch}",
            ws.base_commit,
            head,
        ],
        ws.path,
    )
    logger.info(
        "task %s: %d files (+%d -%d) on %s at %s",
        ws.task_id,
        stats.files,
        stats.insertions,
        stats.deletions,
        ws.branch,
        head[:12],
    )
    return WorkspaceChanges(
        head_commit=head, files_changed=files, diff_stats=stats, patch_path=patch
    )


def _added_lines(ws: Workspace, paths: Sequence[str] = ()) -> str:
    """The lines the staged change adds to the base (of ``paths``, or all), binary as text."""
    pathspec = ["--", *(f":(literal){p}" for p in paths)] if paths else []
    raw = run_git_bytes(
        ["diff", "--cached", *_DIFF_FLAGS, "--text", "--unified=0", ws.base_commit, *pathspec],
        ws.path,
        timeout_seconds=CHECKOUT_TIMEOUT_SECONDS,
    )
    added: list[str] = []
    in_hunk = False
    for line in raw.decode("utf-8", errors="replace").split("\n"):
        if line.startswith("diff --git "):
            in_hunk = False
        elif line.startswith("@@"):
            in_hunk = True
        elif in_hunk and line.startswith("+"):
            added.append(line[1:])
    return "\n".join(added)


def _secret_findings(ws: Workspace, secrets: Mapping[str, str]) -> dict[str, list[str]]:
    """``{path: [secret names]}`` for staged files whose added lines hold a secret value."""
    if not secrets:
        return {}
    everything = _added_lines(ws)
    present = sorted(name for name, value in secrets.items() if value and value in everything)
    if not present:
        return {}
    listed = run_git_bytes(
        ["diff", "--cached", *_DIFF_FLAGS, "--name-only", "-z", ws.base_commit], ws.path
    )
    findings: dict[str, list[str]] = {}
    for raw_path in filter(None, listed.split(b"\0")):
        path = raw_path.decode("utf-8", errors="surrogateescape")
        added = _added_lines(ws, [path])
        names = [name for name in present if secrets[name] in added]
        if names:
            findings[path] = names
    return findings


def _withheld_reason(ws: Workspace, findings: Mapping[str, list[str]]) -> str:
    shown = [f"{path} (the value of {', '.join(names)})" for path, names in findings.items()]
    more = f" and {len(shown) - 5} more" if len(shown) > 5 else ""
    return (
        f"the change was not committed: it adds a configured secret to {', '.join(shown[:5])}"
        f"{more}; remove it from the worktree {str(ws.path)!r} and commit there yourself, or "
        "run the task again"
    )


def _head(ws: Workspace) -> str:
    """The worktree's HEAD commit; warns when HEAD is no longer the task's branch."""
    head, _, on = run_git(["rev-parse", "HEAD", "--symbolic-full-name", "HEAD"], ws.path).partition(
        "\n"
    )
    if on.strip() != f"refs/heads/{ws.branch}":
        logger.warning(
            "workspace %s is no longer on %s (HEAD: %s); its commits are not on that branch",
            ws.path,
            ws.branch,
            on.strip() if on.strip() not in ("", "HEAD") else "detached",
        )
    return head.strip()


def _numstat(cwd: Path, base: str, head: str) -> tuple[list[str], DiffStats]:
    """Changed paths and line counts; binary files count as changed with no lines."""
    raw = run_git_bytes(["diff", *_DIFF_FLAGS, "--numstat", "-z", base, head], cwd)
    tokens = raw.split(b"\0")
    files: list[str] = []
    insertions = deletions = 0
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not token:
            continue
        added, deleted, path = token.split(b"\t", 2)
        if not path:  # a rename or copy: the old and the new path follow
            path = tokens[i + 1]
            i += 2
        files.append(path.decode("utf-8", errors="replace"))
        insertions += int(added) if added.isdigit() else 0
        deletions += int(deleted) if deleted.isdigit() else 0
    return files, DiffStats(files=len(files), insertions=insertions, deletions=deletions)


# -- remove and show -----------------------------------------------------------------------------


def remove_workspace(ws: Workspace, *, keep_branch: bool = True) -> None:
    """Remove the worktree (and, unless ``keep_branch``, its branch). Safe to call twice."""
    if not ws.source_path.exists():
        logger.warning("repository %s is gone; deleting %s only", ws.source_path, ws.path)
        shutil.rmtree(ws.path, ignore_errors=True)
        return
    remove = ["worktree", "remove", "--force", "--force", str(ws.path)]
    with file_lock(_lock_path(ws)):
        # One call when the worktree is there, as it is after a task; otherwise (removed
        # already, a folder git does not know) the repository is checked and tidied.
        if try_git(remove, ws.source_path).returncode != 0:
            if any(_same_path(path, ws.path) for path, _ in _worktrees(ws.source_path)):
                run_git(remove, ws.source_path)
            if ws.path.exists():
                shutil.rmtree(ws.path)
            run_git(["worktree", "prune"], ws.source_path)
        if not keep_branch:
            ref = f"refs/heads/{ws.branch}"
            if try_git(["rev-parse", "--verify", "--quiet", ref], ws.source_path).returncode == 0:
                run_git(["branch", "--quiet", "-D", ws.branch], ws.source_path)
    logger.info(
        "removed workspace %s (branch %s %s)",
        ws.path,
        ws.branch,
        "kept" if keep_branch else "deleted",
    )


def diff_text(source_path: Path, base_commit: str, head_commit: str) -> str:
    """The diff between two commits of a repository, for display."""
    return run_git(["diff", *_DIFF_FLAGS, base_commit, head_commit], source_path)
