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

The same boundary holds a task's own commands (``kind: command``, ``verify``), which the process
placement runs in bubblewrap itself (``agents/bubblewrap.py``): writes to the worktree and the
temp folder only, the protected paths and other tasks' folders hidden, no network.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from claude_conductor.errors import AgentError
from claude_conductor.settings import ConductorSettings

__all__ = [
    "EDITING_TOOLS",
    "SANDBOX_TOOLS",
    "SHELL_SANDBOX_TOOLS",
    "Confinement",
    "check_sandbox_available",
    "cli_settings",
    "confinement_for",
    "may_run_bash",
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
SHELL_SANDBOX_TOOLS = ("bwrap",)
"""What the sandbox of a task's own commands needs on PATH (they get no network: no relay)."""
_PACKAGES = {"bwrap": "bubblewrap", "socat": "socat"}

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
    other_tasks: tuple[Path, ...] = Field(
        default=(),
        description="Folders holding every task's worktree and agent folder: hidden from a "
        "task's sandboxed commands, except its own worktree.",
    )
    sandbox: bool = Field(default=True, description="Bash runs in the CLI's sandbox.")
    allowed_domains: tuple[str, ...] = Field(
        default=(), description="Hosts sandboxed commands may reach."
    )

    @property
    def writable(self) -> tuple[Path, ...]:
        """Where the agent may write: its worktree and its temp folder."""
        return (self.workspace, self.temp_dir)


def _prefect_homes(environ: Mapping[str, str]) -> tuple[Path, ...]:
    """The engine user's own Prefect home (``~/.prefect``, or ``PREFECT_HOME``): its database."""
    homes = []
    if environ.get("PREFECT_HOME"):
        homes.append(Path(environ["PREFECT_HOME"]).expanduser())
    if environ.get("HOME"):
        homes.append(Path(environ["HOME"]) / ".prefect")
    return tuple(path.resolve() for path in homes if path.is_absolute())


def confinement_for(
    workspace: Path,
    temp_dir: Path,
    settings: ConductorSettings,
    engine_env: Mapping[str, str] | None = None,
) -> Confinement:
    """The boundary for an agent working in ``workspace`` with its own ``temp_dir`` (see
    ``system.temp_dirs.new_temp_dir``), under ``settings`` (the home's control files are
    protected) and ``engine_env`` (default: this process's environment; its Prefect home is protected)."""
    home = settings.home.resolve()
    protected = (
        home / "config.yaml",
        home / "prefect",
        home / "run",
        home / "logs",
        home / "results",
        *_prefect_homes(os.environ if engine_env is None else engine_env),
    )
    return Confinement(
        workspace=workspace.resolve(),
        temp_dir=temp_dir,
        protected_paths=tuple(dict.fromkeys(protected)),
        other_tasks=(settings.workspaces_dir.resolve(), settings.agents_dir.resolve()),
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


def sandbox_tools_missing(
    path: str | None = None, tools: Sequence[str] = SANDBOX_TOOLS
) -> list[str]:
    """The sandbox's ``tools`` not found on ``path`` (default: PATH)."""
    if not sys.platform.startswith("linux"):
        return []  # macOS uses its built-in Seatbelt
    return [tool for tool in tools if shutil.which(tool, path=path) is None]


def check_sandbox_available(
    conf: Confinement, env: Mapping[str, str], tools: Sequence[str] = SANDBOX_TOOLS
) -> None:
    """Raise ``AgentError`` naming the fix when the sandbox is on but ``tools`` (default: the
    agent's, ``SANDBOX_TOOLS``; a task's commands need ``SHELL_SANDBOX_TOOLS``) are not on
    ``env``'s PATH."""
    if not conf.sandbox:
        return
    missing = sandbox_tools_missing(env.get("PATH"), tools)
    if missing:
        packages = " ".join(_PACKAGES.get(tool, tool) for tool in missing)
        raise AgentError(
            f"agent.sandbox is on but {' and '.join(missing)} is not on the agent's PATH: "
            f"install {'it' if len(missing) == 1 else 'them'} (`apt-get install {packages}`), "
            "or set CONDUCTOR_AGENT__SANDBOX=false to let agents' commands (Bash, "
            "`kind: command`, verify) run unconfined"
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
