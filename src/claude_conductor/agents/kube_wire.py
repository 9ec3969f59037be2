"""What the engine and an agent pod say to each other (the ``kubernetes`` placement).

Into the pod, on its stdin (Kubernetes ``attach``, never stored in the API): one JSON header
line (``PodRequest``: argv, environment, the engine's paths to map, the prompt when it goes on
stdin, a per-launch ``nonce``) and then a gzip'd tar of the engine's worktree (what git would
commit: tracked and untracked files, not ignored ones, no ``.git``).

Out of the pod, on its log: the work's own output lines, unchanged, and *control lines*: one
JSON object a line carrying the launch's nonce (``{"conductor": NONCE, "kind": ...}``):
``ready`` (the snapshot arrived), ``stderr`` (a line of the agent's stderr), ``patch`` (what
the work changed, a binary git diff, gzip + base64), ``exit`` (its exit code) and ``error``.
The pod is untrusted: the engine checks what it gets (the patch applies with ``git apply``,
which refuses paths outside the worktree and inside ``.git``) and nothing here can reach the
engine's credentials. Pure functions and small file helpers only; no Kubernetes client.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from claude_conductor.errors import AgentError

__all__ = [
    "ControlKind",
    "ControlLine",
    "PodRequest",
    "control_line",
    "decode_patch",
    "encode_patch",
    "parse_control",
    "read_request",
    "snapshot_files",
    "write_snapshot",
]

ControlKind = Literal["ready", "stderr", "patch", "exit", "error"]
_GIT_TIMEOUT_SECONDS = 120.0


class PodRequest(BaseModel):
    """The header line the engine sends into an agent pod."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    nonce: str = Field(min_length=16, description="Marks this launch's control lines.")
    role: Literal["agent", "shell"] = Field(description="The claude CLI, or a shell command.")
    argv: list[str] = Field(min_length=1, description="What to run (engine paths inside).")
    env: dict[str, str] = Field(description="Its environment (already scrubbed by the engine).")
    engine_workspace: str = Field(description="The worktree's path on the engine's side.")
    stdin_text: str | None = Field(default=None, description="Written to the work's stdin.")
    archive_bytes: int = Field(ge=0, description="Size of the workspace archive that follows.")
    archive_sha256: str = Field(description="Its SHA-256, checked before anything runs.")


class ControlLine(BaseModel):
    """One control line from the pod (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: ControlKind
    text: str = ""
    code: int | None = None
    data: str = ""
    sha256: str = ""


def control_line(nonce: str, kind: ControlKind, **fields: Any) -> str:
    """A control line (without the newline)."""
    return json.dumps({"conductor": nonce, "kind": kind, **fields}, separators=(",", ":"))


def parse_control(line: bytes | str, nonce: str) -> ControlLine | None:
    """The control line in ``line`` if it carries ``nonce``; None for the work's own output."""
    text = line.decode("utf-8", errors="replace") if isinstance(line, bytes) else line
    if '"conductor"' not in text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("conductor") != nonce:
        return None
    try:
        return ControlLine.model_validate(data)
    except ValueError:
        return None


def encode_patch(patch: bytes) -> tuple[str, str]:
    """``(data, sha256)`` of a patch for a ``patch`` control line."""
    return base64.b64encode(gzip.compress(patch, 6)).decode("ascii"), hashlib.sha256(
        patch
    ).hexdigest()


def decode_patch(control: ControlLine, max_bytes: int) -> bytes:
    """The patch a ``patch`` control line carries; AgentError when it is damaged or too big."""
    try:
        packed = base64.b64decode(control.data, validate=True)
        with gzip.GzipFile(fileobj=io.BytesIO(packed)) as stream:
            patch = stream.read(max_bytes + 1)
    except (ValueError, OSError, EOFError) as exc:
        raise AgentError(f"the agent pod sent a damaged patch: {exc}") from exc
    if len(patch) > max_bytes:
        raise AgentError(f"the agent pod's patch is larger than {max_bytes} bytes")
    if hashlib.sha256(patch).hexdigest() != control.sha256:
        raise AgentError("the agent pod's patch does not match its checksum")
    return patch


def _git(workspace: Path, *args: str) -> bytes:
    proc = subprocess.run(
        ["git", *args],
        cwd=workspace,
        capture_output=True,
        timeout=_GIT_TIMEOUT_SECONDS,
        check=False,
    )
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", errors="replace").strip().splitlines()[-1:]
        raise AgentError(f"git {' '.join(args[:2])} failed in {str(workspace)!r}: {tail}")
    return proc.stdout


def snapshot_files(workspace: Path) -> list[str]:
    """The worktree's files as git sees them: tracked and untracked, not ignored, no .git."""
    out = _git(workspace, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    names = sorted({n for n in out.decode("utf-8", errors="surrogateescape").split("\0") if n})
    return [n for n in names if os.path.lexists(workspace / n)]


def write_snapshot(workspace: Path, names: Sequence[str], out: IO[bytes], max_bytes: int) -> int:
    """Write a gzip'd tar of ``names`` (relative to ``workspace``) to ``out``; its size.
    Symlinks stay links; AgentError past ``max_bytes`` (agent.kubernetes.max_workspace_bytes)."""
    start = out.tell()
    with tarfile.open(fileobj=out, mode="w:gz", compresslevel=1) as tar:
        for name in names:
            tar.add(workspace / name, arcname=name, recursive=False)
            if out.tell() - start > max_bytes:
                raise AgentError(
                    f"the workspace {str(workspace)!r} is larger than {max_bytes} bytes "
                    "compressed: raise agent.kubernetes.max_workspace_bytes or ignore build "
                    "output in .gitignore"
                )
    return out.tell() - start


def read_request(stream: IO[bytes], max_header_bytes: int) -> PodRequest:
    """The header line from a pod's stdin (the archive follows it)."""
    line = stream.readline(max_header_bytes + 1)
    if not line.endswith(b"\n"):
        raise AgentError("the agent pod's stdin ended or overflowed before the request header")
    try:
        return PodRequest.model_validate_json(line)
    except ValueError as exc:
        raise AgentError(f"the agent pod got an unreadable request header: {exc}") from exc
