"""The agent pod's entry point (``python -m claude_conductor.agents.kube_pod``): the container
command of the agent Job template. Untrusted territory: it holds no credential but the model
endpoint's, and whatever it says the engine checks.

It reads the engine's request from stdin (``kube_wire``): the header, then the workspace
archive, which it checks against its checksum and unpacks into ``--workspace`` (tar's ``data``
filter: no absolute paths, no ``..``, no links out). It makes that snapshot a git commit, runs
the work there (the engine's paths in argv and environment mapped to the pod's), forwards its
stdout unchanged and its stderr as control lines (an agent) or merged (a shell command), and
when the work ends prints the changes as a ``patch`` control line and its exit code, and exits
with it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import IO

from claude_conductor.agents.kube_wire import PodRequest, control_line, encode_patch, read_request
from claude_conductor.errors import AgentError

__all__ = ["main", "map_paths"]

_MAX_HEADER_BYTES = 64 * 1024 * 1024
_CHUNK_BYTES = 1024 * 1024
_IDENTITY = ("-c", "user.name=conductor", "-c", "user.email=conductor@localhost")
_GIT_TIMEOUT_SECONDS = 600.0


def map_paths(
    request: PodRequest, workspace: Path, home: Path, tmp: str
) -> tuple[list[str], dict[str, str]]:
    """argv and environment with the engine's worktree path replaced by the pod's, and the
    per-agent folders (HOME, CLAUDE_CONFIG_DIR, TMPDIR) in the pod's own volumes."""
    engine = request.engine_workspace.rstrip("/")

    def swap(value: str) -> str:
        return value.replace(engine, str(workspace)) if engine else value

    argv = [swap(arg) for arg in request.argv]
    env = {name: swap(value) for name, value in request.env.items()}
    env["HOME"] = str(home)
    env["TMPDIR"] = tmp
    if "CLAUDE_CONFIG_DIR" in env:
        env["CLAUDE_CONFIG_DIR"] = str(home / ".claude")
    return argv, env


def _resolve(argv: list[str]) -> list[str]:
    """The engine's ``claude`` path when it exists here (same image), else this image's."""
    if os.path.exists(argv[0]) or Path(argv[0]).name != "claude":
        return argv
    found = shutil.which("claude")
    if found is None:
        import importlib.util

        spec = importlib.util.find_spec("claude_agent_sdk")
        for folder in (spec.submodule_search_locations or []) if spec else []:
            bundled = Path(folder) / "_bundled" / "claude"
            if bundled.is_file():
                found = str(bundled)
    return [found, *argv[1:]] if found else argv


_OUT_LOCK = threading.Lock()


def _emit(line: str) -> None:
    _write(line.encode("utf-8") + b"\n")


def _write(data: bytes) -> None:
    """One whole line to the pod's stdout (the log): lines of the work and control lines
    never interleave."""
    with _OUT_LOCK:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


def _git(workspace: Path, *args: str) -> bytes:
    proc = subprocess.run(
        ["git", *_IDENTITY, *args],
        cwd=workspace,
        capture_output=True,
        timeout=_GIT_TIMEOUT_SECONDS,
        check=False,
    )
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", errors="replace").strip()[-300:]
        raise AgentError(f"git {args[0]} failed in the agent pod: {tail}")
    return proc.stdout


def _receive(stdin: IO[bytes], request: PodRequest, workspace: Path) -> None:
    """Read the archive that follows the header, check it, unpack it, commit it."""
    digest = hashlib.sha256()
    with tempfile.TemporaryFile() as archive:
        left = request.archive_bytes
        while left:
            chunk = stdin.read(min(left, _CHUNK_BYTES))
            if not chunk:
                raise AgentError("the agent pod's stdin ended before the whole workspace came")
            digest.update(chunk)
            archive.write(chunk)
            left -= len(chunk)
        if digest.hexdigest() != request.archive_sha256:
            raise AgentError("the workspace archive does not match its checksum")
        archive.seek(0)
        workspace.mkdir(parents=True, exist_ok=True)
        if request.archive_bytes:
            with tarfile.open(fileobj=archive, mode="r:gz") as tar:
                tar.extractall(workspace, filter="data")
    _git(workspace, "init", "-q")
    _git(workspace, "add", "-A")
    _git(workspace, "commit", "-q", "--allow-empty", "--no-verify", "-m", "conductor: snapshot")


def _pump_stdout(stream: IO[bytes]) -> None:
    for raw in stream:
        _write(raw if raw.endswith(b"\n") else raw + b"\n")


def _pump_stderr(stream: IO[bytes], nonce: str) -> None:
    for raw in stream:
        text = raw.decode("utf-8", errors="replace").rstrip("\n")
        _emit(control_line(nonce, "stderr", text=text))


def _run(request: PodRequest, argv: list[str], env: dict[str, str], workspace: Path) -> int:
    shell = request.role == "shell"
    proc = subprocess.Popen(
        _resolve(argv),
        cwd=workspace,
        env=env,
        stdin=subprocess.PIPE if request.stdin_text is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if shell else subprocess.PIPE,
        start_new_session=True,
    )

    def _forward(signum: int, frame: FrameType | None) -> None:
        # Kubernetes stops the pod (Job deleted, deadline): stop the work's whole group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)

    signal.signal(signal.SIGTERM, _forward)
    assert proc.stdout is not None
    pumps = [threading.Thread(target=_pump_stdout, args=(proc.stdout,), daemon=True)]
    if proc.stderr is not None:
        pumps.append(
            threading.Thread(target=_pump_stderr, args=(proc.stderr, request.nonce), daemon=True)
        )
    for pump in pumps:
        pump.start()
    if proc.stdin is not None:
        try:
            proc.stdin.write((request.stdin_text or "").encode("utf-8"))
        except BrokenPipeError:
            pass
        finally:
            proc.stdin.close()
    code = proc.wait()
    for pump in pumps:
        pump.join(timeout=5)  # a background child may still hold the pipes: do not wait on it
    return code


def _changes(workspace: Path) -> bytes:
    _git(workspace, "add", "-A")
    return _git(workspace, "diff", "--cached", "--binary", "--no-color", "--no-ext-diff", "HEAD")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m claude_conductor.agents.kube_pod")
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--home", type=Path, required=True)
    args = parser.parse_args(argv)
    stdin = sys.stdin.buffer
    try:
        request = read_request(stdin, _MAX_HEADER_BYTES)
    except AgentError as exc:
        print(f"agent pod: {exc}", file=sys.stderr, flush=True)
        return 2
    nonce = request.nonce
    try:
        _receive(stdin, request, args.workspace)
        _emit(control_line(nonce, "ready"))
        args.home.mkdir(parents=True, exist_ok=True)
        work_argv, env = map_paths(
            request, args.workspace, args.home, os.environ.get("TMPDIR", "/tmp")
        )
        code = _run(request, work_argv, env, args.workspace)
        data, sha256 = encode_patch(_changes(args.workspace))
        _emit(control_line(nonce, "patch", data=data, sha256=sha256))
    except (AgentError, OSError, subprocess.SubprocessError) as exc:
        _emit(control_line(nonce, "error", text=str(exc)))
        return 70
    _emit(control_line(nonce, "exit", code=code))
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    raise SystemExit(main())
