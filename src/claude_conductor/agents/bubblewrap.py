"""The process placement's sandbox for a task's own commands: a ``bwrap`` argv, built pure.

A ``kind: command`` command and a ``verify`` command run the repository's code, which the agent
may just have written: on the process placement (standalone, Kubernetes warm pool) they run in
bubblewrap (Debian package ``bubblewrap``), inside the boundary ``agents/confinement.py`` owns:

- the whole filesystem read-only; writable only the task's worktree and its temp folder (its
  ``TMPDIR``); the worktree's ``.git`` pointer read-only, so that a command cannot point the
  engine's ``git`` (which commits afterwards, outside the sandbox) at a repository of its own;
- the git metadata the worktree needs (the repository's common ``.git`` dir) read-only;
- hidden (an empty read-only folder, or an unreadable file, in their place): the confinement's
  protected paths (Conductor's control files, Prefect's homes and database), every other task's
  worktree and agent folder, ``/tmp`` (other processes' temp files and sockets) and ``/run``
  (service sockets: Docker's, D-Bus...);
- its own PID namespace with its own ``/proc`` (no other process, the engine's environment
  included, is visible), IPC, UTS and cgroup namespaces, a fresh ``/dev``, no capabilities
  (``no_new_privs`` too: setuid programs do not give them back), a new session (no terminal
  to inject input into), killed with the engine (``--die-with-parent``);
- no network (``--unshare-net``: loopback only, its own): not the Prefect API on the host's
  loopback, not the internet. ``agent.sandbox_allowed_domains`` applies to the agent's Bash
  only (the ``claude`` CLI filters it through its own proxy); a command that needs the
  network needs ``agent.sandbox=false``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from claude_conductor.agents.confinement import Confinement

__all__ = ["ALWAYS_HIDDEN", "bubblewrap_argv", "git_dirs", "paths_to_hide"]

ALWAYS_HIDDEN = (Path("/tmp"), Path("/run"))
"""Shared folders hidden whatever the task: temp files and sockets of everyone else."""


def git_dirs(workspace: Path) -> tuple[Path, ...]:
    """The git metadata ``workspace`` needs beyond itself: for a linked worktree (what
    Conductor makes), the repository's common ``.git`` dir, which holds the worktree's own
    git dir; none when ``.git`` is a folder inside the workspace or is missing."""
    dot_git = workspace / ".git"
    if not dot_git.is_file():
        return ()
    first = dot_git.read_text(encoding="utf-8", errors="replace").splitlines()[:1]
    if not first or not first[0].startswith("gitdir:"):
        return ()
    git_dir = (workspace / first[0].removeprefix("gitdir:").strip()).resolve()
    commondir = git_dir / "commondir"
    if commondir.is_file():
        return ((git_dir / commondir.read_text(encoding="utf-8").strip()).resolve(),)
    return (git_dir,)


def paths_to_hide(conf: Confinement) -> dict[Path, bool]:
    """The paths ``bubblewrap_argv`` may hide that exist here, each with whether it is a
    folder (hidden by an empty one) or not (hidden by an unreadable file)."""
    found: dict[Path, bool] = {}
    for path in (*ALWAYS_HIDDEN, *conf.other_tasks, *conf.protected_paths):
        if path.exists():
            found[path] = path.is_dir()
    return found


def _within(path: Path, folders: Sequence[Path]) -> bool:
    return any(path == folder or path.is_relative_to(folder) for folder in folders)


def bubblewrap_argv(
    bwrap: Path | str,
    conf: Confinement,
    command: Sequence[str],
    *,
    existing: Mapping[Path, bool],
    git_metadata: Sequence[Path] = (),
) -> list[str]:
    """The argv that runs ``command`` in ``conf``'s boundary with ``bwrap``.

    ``existing`` (see ``paths_to_hide``: looked up by the caller, so this stays pure) says
    which paths to hide exist, and which of them are folders; a path that does not exist is
    not hidden (there is nothing to see, and no mount point on a read-only root).
    ``git_metadata`` (see ``git_dirs``) is shown read-only. Mount order matters: hide, then
    show again what the task needs (its worktree sits in a hidden folder), then hide what it
    must not see inside that, then make every folder used for hiding read-only.
    """
    workspace = conf.workspace
    shown = [*git_metadata, workspace, conf.temp_dir]
    private = [path for path in (*conf.other_tasks, *conf.protected_paths) if path in existing]
    # A private path inside something shown again is hidden after it, the others before.
    hidden_after = [path for path in private if _within(path, shown)]
    hidden_first = [path for path in ALWAYS_HIDDEN if path in existing]
    for path in private:
        if path not in hidden_after and not _within(path, hidden_first):
            hidden_first.append(path)

    argv = [str(bwrap), "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    tmpfs: list[Path] = []

    def hide(paths: Sequence[Path]) -> None:
        for path in dict.fromkeys(paths):
            if existing[path]:
                argv.extend(["--perms", "0555", "--tmpfs", str(path)])
                tmpfs.append(path)
            else:
                argv.extend(["--ro-bind", "/dev/null", str(path)])  # no devices: unreadable

    hide(hidden_first)
    for meta in git_metadata:
        argv.extend(["--ro-bind", str(meta), str(meta)])
    for folder in (workspace, conf.temp_dir):
        argv.extend(["--bind", str(folder), str(folder)])
    argv.extend(["--ro-bind-try", str(workspace / ".git"), str(workspace / ".git")])
    hide(hidden_after)
    for path in tmpfs:
        argv += ["--remount-ro", str(path)]
    argv += [
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--unshare-net",
        "--cap-drop",
        "ALL",
        "--new-session",
        "--die-with-parent",
        "--chdir",
        str(workspace),
        "--",
        *command,
    ]
    return argv
