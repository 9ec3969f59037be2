"""A tiny, bounded ``git`` runner: argv lists only, no prompts, a fixed identity for commits.

Every call is blocking and bounded by ``timeout_seconds``; callers run it in a worker thread.
git runs in its own process group so that on timeout the whole group (git and any ``ssh`` or
remote helper it started) is terminated, then killed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from claude_conductor.errors import WorkspaceError
from claude_conductor.redaction import mask_url_password

__all__ = [
    "CONDUCTOR_EMAIL",
    "CONDUCTOR_NAME",
    "GIT_TIMEOUT_SECONDS",
    "GitOutcome",
    "build_git_argv",
    "git_env",
    "redact",
    "run_git",
    "run_git_bytes",
    "try_git",
]

logger = logging.getLogger(__name__)

CONDUCTOR_NAME = "Claude Conductor"
CONDUCTOR_EMAIL = "conductor@localhost"
GIT_TIMEOUT_SECONDS = 120.0
_KILL_GRACE_SECONDS = 3.0
_STDERR_TAIL_CHARS = 2000

# Variables that would point git at some other repository than the cwd's (set, for
# example, when Conductor itself is started from a git hook).
_REPO_OVERRIDE_VARS = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
)


class GitOutcome(NamedTuple):
    """What a git call returned, for probes where a non-zero exit is an answer, not an error."""

    returncode: int
    stdout: str
    stderr: str


def redact(text: str) -> str:
    """Hide passwords and tokens in URLs: ``https://user:tok@host`` -> ``https://user:***@host``."""
    return mask_url_password(text)


def git_env(base: Mapping[str, str]) -> dict[str, str]:
    """The environment for every git call: never prompt, Conductor's identity for commits."""
    env = {k: v for k, v in base.items() if k not in _REPO_OVERRIDE_VARS}
    env.update(
        {
            "GIT_TERMINAL_PROMPT": "0",
            "GCM_INTERACTIVE": "never",
            "GIT_OPTIONAL_LOCKS": "0",
            "GIT_AUTHOR_NAME": CONDUCTOR_NAME,
            "GIT_AUTHOR_EMAIL": CONDUCTOR_EMAIL,
            "GIT_COMMITTER_NAME": CONDUCTOR_NAME,
            "GIT_COMMITTER_EMAIL": CONDUCTOR_EMAIL,
            "LC_ALL": "C",
            "LANGUAGE": "C",
        }
    )
    if "GIT_SSH_COMMAND" not in base and "GIT_SSH" not in base:
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"
    return env


def build_git_argv(args: Sequence[str], config: Mapping[str, str] | None = None) -> list[str]:
    """``git [-c key=value ...] <args>``; a pure function, tested without spawning."""
    argv = ["git"]
    for key, value in (config or {}).items():
        argv += ["-c", f"{key}={value}"]
    argv += list(args)
    return argv


def _run(
    args: Sequence[str],
    cwd: Path,
    timeout_seconds: float,
    config: Mapping[str, str] | None,
) -> tuple[int, bytes, bytes]:
    argv = build_git_argv(args, config)
    shown = redact(" ".join(["git", *args]))
    logger.debug("running %s in %s", shown, cwd)
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=git_env(os.environ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        if not Path(cwd).is_dir():
            raise WorkspaceError(
                f"cannot run {shown}: directory {str(cwd)!r} does not exist"
            ) from exc
        raise WorkspaceError(
            "git is not installed or not on PATH: install git (https://git-scm.com) and retry"
        ) from exc
    try:
        stdout, stderr = proc.communicate(timeout=timeout_seconds)
    except subprocess.TimeoutExpired as exc:
        _stop_group(proc)
        raise WorkspaceError(
            f"{shown} in {str(cwd)!r} timed out after {timeout_seconds:g}s "
            "(a slow network or a very large repository?)"
        ) from exc
    except BaseException:
        _stop_group(proc)
        raise
    return proc.returncode, stdout, stderr


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Terminate git's whole process group, then kill it if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.communicate(timeout=_KILL_GRACE_SECONDS)
            return
        except subprocess.TimeoutExpired:
            continue
    # Killed, but something outside the group still holds the pipes: stop reading them.
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    proc.wait(timeout=_KILL_GRACE_SECONDS)


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _failure(args: Sequence[str], cwd: Path, code: int, stderr: bytes) -> WorkspaceError:
    tail = redact(_decode(stderr).strip()[-_STDERR_TAIL_CHARS:])
    shown = redact(" ".join(["git", *args]))
    return WorkspaceError(f"{shown} failed in {str(cwd)!r} (exit {code})", stderr_tail=tail)


def run_git_bytes(
    args: Sequence[str],
    cwd: Path,
    *,
    timeout_seconds: float = GIT_TIMEOUT_SECONDS,
    config: Mapping[str, str] | None = None,
) -> bytes:
    """Run git, return its raw stdout; raise ``WorkspaceError`` with stderr's tail on failure."""
    code, stdout, stderr = _run(args, cwd, timeout_seconds, config)
    if code != 0:
        raise _failure(args, cwd, code, stderr)
    return stdout


def run_git(
    args: Sequence[str],
    cwd: Path,
    *,
    timeout_seconds: float = GIT_TIMEOUT_SECONDS,
    config: Mapping[str, str] | None = None,
) -> str:
    """Run git and return its stdout as text, stripped of the final newline."""
    out = run_git_bytes(args, cwd, timeout_seconds=timeout_seconds, config=config)
    return _decode(out).rstrip("\n")


def try_git(
    args: Sequence[str],
    cwd: Path,
    *,
    timeout_seconds: float = GIT_TIMEOUT_SECONDS,
    config: Mapping[str, str] | None = None,
) -> GitOutcome:
    """Run git and return its exit code and output without raising on a non-zero exit.

    Still raises ``WorkspaceError`` when git cannot be started or times out.
    """
    code, stdout, stderr = _run(args, cwd, timeout_seconds, config)
    return GitOutcome(code, _decode(stdout).rstrip("\n"), redact(_decode(stderr).strip()))
