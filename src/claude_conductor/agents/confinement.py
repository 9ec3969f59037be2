"""Where an agent may write, what it may read and what its commands may reach.

This is the process placement's boundary (the agent is a child process of the engine: the
standalone tier, the Kubernetes warm pool). The ``claude`` CLI enforces it, from the settings
``cli_settings`` builds and ``build_argv`` passes with ``--settings``:

- The file tools (Write, Edit, MultiEdit, NotebookEdit) write only inside the task's worktree
  and its temp folder: ``permissions.blockWritesOutsideWorkingDirectories`` refuses the rest
  in every permission mode, and the allow rules are path-scoped (``Edit(//<worktree>/**)``).
  A refused write is a permission denial: the task ends ``needs_attention`` naming the path.
- Conductor's control files (``config.yaml``, Prefect's home and its database, the run and log
  folders, results) and ``/proc`` (another process's environment) are denied to the file tools
  by ``Read`` deny rules, which the CLI also applies to sandboxed commands.
- Bash runs in the CLI's sandbox (bubblewrap on Linux): it writes only the worktree and the temp
  folder, sees its own PID namespace, and reaches no network except ``agent.
  sandbox_allowed_domains`` (the model endpoint is reached by the CLI itself, outside the
  sandbox). A command cannot ask to leave it (``allowUnsandboxedCommands: false``) and the CLI
  refuses to start without one (``failIfUnavailable``). ``agent.sandbox=false`` turns it off.
- Only these settings count (``--setting-sources user`` on the agent's own config folder,
  ``--strict-mcp-config``): the repository under work cannot bring hooks, MCP servers or
  permission rules, which would run or apply outside the sandbox.

``scrub_agent_files`` then removes what the CLI left that could hold a secret (the agent runs
with ``--no-session-persistence``: Conductor never resumes a session) and redacts the rest.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from claude_conductor.errors import AgentError
from claude_conductor.settings import ConductorSettings

__all__ = [
    "EDITING_TOOLS",
    "SANDBOX_TOOLS",
    "Confinement",
    "check_sandbox_available",
    "cli_settings",
    "confinement_for",
    "may_run_bash",
    "new_temp_dir",
    "remove_temp_dir",
    "sandbox_tools_missing",
    "scope_allowed_tools",
    "scrub_agent_files",
]

logger = logging.getLogger(__name__)

EDITING_TOOLS = frozenset({"Write", "Edit", "MultiEdit", "NotebookEdit"})
"""Tools that change files; a bare allow of one becomes an ``Edit`` rule per writable folder."""
SANDBOX_TOOLS = ("bwrap", "socat")
"""What the CLI's Linux sandbox needs on PATH (Debian packages ``bubblewrap`` and ``socat``)."""

_TEMP_PREFIX = "ccd-"
_SESSION_FOLDERS = ("projects", "file-history", "shell-snapshots", "todos")
_SCRUB_MAX_BYTES = 64 * 1024 * 1024


class Confinement(BaseModel):
    """The boundary of one agent run."""

    model_config = ConfigDict(frozen=True)

    workspace: Path = Field(description="The task's worktree (absolute): the agent's cwd.")
    temp_dir: Path = Field(
        description="The agent's own temp folder (absolute, private, `/tmp/ccd-XXXXXXXX`): the "
        "CLI's CLAUDE_CODE_TMPDIR, removed after the run."
    )
    protected_paths: tuple[Path, ...] = Field(
        default=(), description="Control files and folders the agent may not read."
    )
    sandbox: bool = Field(default=True, description="Bash runs in the CLI's sandbox.")
    allowed_domains: tuple[str, ...] = Field(
        default=(), description="Hosts sandboxed commands may reach."
    )

    @property
    def writable(self) -> tuple[Path, ...]:
        """Where the agent may write: its worktree and its temp folder."""
        return (self.workspace, self.temp_dir)


def new_temp_dir() -> Path:
    """A fresh name for one agent's temp folder (created by ``run_agent`` with mode 0700),
    on a short path: the CLI keeps sockets in it and, past about 30 bytes, falls back to a
    temp folder that every agent of the user shares (``/tmp/claude-<uid>``)."""
    base = Path("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()).resolve()
    return base / f"{_TEMP_PREFIX}{secrets.token_hex(4)}"


def confinement_for(workspace: Path, temp_dir: Path, settings: ConductorSettings) -> Confinement:
    """The boundary for an agent working in ``workspace`` with its own ``temp_dir`` (see
    ``new_temp_dir``), under ``settings`` (the home's control files are protected)."""
    home = settings.home.resolve()
    protected = (
        home / "config.yaml",
        home / "prefect",
        home / "run",
        home / "logs",
        home / "results",
    )
    return Confinement(
        workspace=workspace.resolve(),
        temp_dir=temp_dir,
        protected_paths=protected,
        sandbox=settings.agent_sandbox,
        allowed_domains=tuple(settings.agent.sandbox_allowed_domains),
    )


def _edit_rules(conf: Confinement) -> list[str]:
    # A rule path starting with `//` is absolute: "/" + "/abs/path".
    return [f"Edit(/{folder}/**)" for folder in conf.writable]


def _read_denials(conf: Confinement) -> list[str]:
    rules = ["Read(//proc/**)", "Read(~/.prefect/**)"]
    for path in conf.protected_paths:
        rules += [f"Read(/{path})", f"Read(/{path}/**)"]
    return rules


def scope_allowed_tools(allowed: Sequence[str], conf: Confinement) -> tuple[str, ...]:
    """``allowed`` with each bare editing tool (``Write``, ``Edit``...) replaced by ``Edit``
    rules for the writable folders only; other entries are kept as they are."""
    scoped: list[str] = []
    for tool in allowed:
        scoped += _edit_rules(conf) if tool in EDITING_TOOLS else [tool]
    return tuple(dict.fromkeys(scoped))


def cli_settings(conf: Confinement, *, read_only: bool) -> dict[str, Any]:
    """The settings passed to the CLI with ``--settings``.

    A read-only task's Bash commands are not auto-allowed (only the read commands its allow
    rules name run) and its sandbox may not write the worktree either.
    """
    settings: dict[str, Any] = {
        "permissions": {
            "blockWritesOutsideWorkingDirectories": True,
            "additionalDirectories": [str(conf.temp_dir)],
            "deny": _read_denials(conf),
        },
    }
    if not conf.sandbox:
        settings["sandbox"] = {"enabled": False}
        return settings
    filesystem: dict[str, Any] = {"denyRead": [str(path) for path in conf.protected_paths]}
    if read_only:
        filesystem["denyWrite"] = [str(conf.workspace)]
    settings["sandbox"] = {
        "enabled": True,
        "failIfUnavailable": True,
        "autoAllowBashIfSandboxed": not read_only,
        "allowUnsandboxedCommands": False,
        "filesystem": filesystem,
        "network": {"allowedDomains": list(conf.allowed_domains), "allowLocalBinding": False},
    }
    return settings


def may_run_bash(permission_mode: str, allowed: Sequence[str], disallowed: Sequence[str]) -> bool:
    """Whether a policy lets the agent run any Bash command (the sandbox is for those only)."""
    if "Bash" in disallowed:
        return False
    return permission_mode == "bypassPermissions" or any(
        tool == "Bash" or tool.startswith("Bash(") for tool in allowed
    )


def sandbox_tools_missing(path: str | None = None) -> list[str]:
    """The sandbox's tools (``SANDBOX_TOOLS``) not found on ``path`` (default: PATH)."""
    if not sys.platform.startswith("linux"):
        return []  # macOS uses its built-in Seatbelt
    return [tool for tool in SANDBOX_TOOLS if shutil.which(tool, path=path) is None]


def check_sandbox_available(conf: Confinement, env: Mapping[str, str]) -> None:
    """Raise ``AgentError`` naming the fix when the sandbox is on but cannot run here."""
    if not conf.sandbox:
        return
    missing = sandbox_tools_missing(env.get("PATH"))
    if missing:
        raise AgentError(
            f"agent.sandbox is on but {' and '.join(missing)} is not on the agent's PATH: "
            "install them (`apt-get install bubblewrap socat`), or set "
            "CONDUCTOR_AGENT__SANDBOX=false to let agents' Bash commands run unconfined"
        )


def remove_temp_dir(conf: Confinement) -> None:
    """Delete the agent's temp folder (safe to call twice)."""
    shutil.rmtree(conf.temp_dir, ignore_errors=True)


def scrub_agent_files(config_dir: Path, redact: Callable[[str], str]) -> list[Path]:
    """Remove the CLI's session records under ``config_dir`` and redact every other file in
    it that holds a secret (``redact`` masks them); returns the files changed or removed."""
    changed: list[Path] = []
    if not config_dir.is_dir():
        return changed
    for name in _SESSION_FOLDERS:
        folder = config_dir / name
        if folder.is_dir():
            changed += [path for path in folder.rglob("*") if path.is_file()]
            shutil.rmtree(folder, ignore_errors=True)
    for path in config_dir.rglob("*"):
        if not path.is_file() or path.is_symlink() or path.stat().st_size > _SCRUB_MAX_BYTES:
            continue
        text = path.read_bytes().decode("utf-8", errors="surrogateescape")
        cleaned = redact(text)
        if cleaned != text:
            path.write_bytes(cleaned.encode("utf-8", errors="surrogateescape"))
            changed.append(path)
    if changed:
        logger.info("scrubbed %d agent files under %s", len(changed), config_dir)
    return changed
