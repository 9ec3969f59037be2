"""Where an agent runs: the seam between a task's engine and its untrusted work.

A task's engine (Conductor's flow in Prefect's flow-run engine, which holds the Prefect API
credential) always runs in a Conductor worker process. What it starts on the task's behalf (the
``claude`` CLI, a ``kind: command`` command, a ``verify`` command) is untrusted and runs where
the *placement* puts it (``agent.placement``; see docs/architecture.md):

- ``process``: a child process of the engine on the same machine (standalone tier, Kubernetes
  warm pool), confined by the CLI's permission rules and sandbox and a scrubbed environment;
  commands and verify in bubblewrap (``agents/bubblewrap.py``) when ``agent.sandbox`` is on;
- ``docker``: a sibling container per task (docker tier);
- ``kubernetes``: a pod per task (Kubernetes Job-per-task mode).

Every placement turns a *launch request* (what the engine wants started: argv, scrubbed
environment, workspace) into a *launch plan*: a local command whose standard streams are the
work's standard streams (for ``docker``: ``docker run -i ...``; for ``kubernetes``: a small
attach helper that creates the pod and follows its log). The runtime spawns that command in its
own process group, reads its stdout exactly as it reads a local agent's, stops the group on
timeout or cancellation, then awaits the plan's ``cleanup`` (which must leave nothing running:
remove the container, delete the pod), whatever happened. So limits, watchdogs, transcripts and
status decisions are the same on every tier.
"""

from __future__ import annotations

import asyncio
import importlib
import shutil
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, cast

from claude_conductor.agents.bubblewrap import bubblewrap_argv, git_dirs, paths_to_hide
from claude_conductor.agents.confinement import (
    SHELL_SANDBOX_TOOLS,
    check_sandbox_available,
    confinement_for,
    remove_temp_dir,
)
from claude_conductor.errors import AgentError
from claude_conductor.settings import ConductorSettings
from claude_conductor.system.temp_dirs import new_temp_dir

__all__ = [
    "LaunchPlan",
    "LaunchRequest",
    "Placement",
    "ProcessPlacement",
    "get_placement",
]

Role = Literal["agent", "shell"]
"""``agent``: the ``claude`` CLI; ``shell``: a ``/bin/sh -c`` command (command task, verify)."""


@dataclass(frozen=True)
class LaunchRequest:
    """What the engine wants started for a task. ``env`` is already scrubbed of anything the
    work must not see; a placement may drop more, never add a control-plane credential."""

    task_id: str
    role: Role
    argv: Sequence[str]
    env: Mapping[str, str]
    workspace: Path
    timeout_seconds: float
    stdin_used: bool = False


@dataclass(frozen=True)
class LaunchPlan:
    """The local command that runs the work, and how to make sure nothing is left after it."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    cleanup: Callable[[], Awaitable[None]] | None = field(default=None, compare=False)

    async def run_cleanup(self) -> None:
        if self.cleanup is not None:
            await self.cleanup()


class Placement(Protocol):
    """One way to run untrusted work. Implementations are cheap to build (one per launch)."""

    name: str

    def plan(self, request: LaunchRequest) -> LaunchPlan:
        """The command to spawn for ``request``; raises ``AgentError`` when it cannot run."""
        ...


class ProcessPlacement:
    """The work runs as a child process of the engine. The agent runs as asked (the ``claude``
    CLI confines itself: ``agents/confinement.py``); shell work runs in bubblewrap when
    ``agent.sandbox`` is on (``agents/bubblewrap.py``), with its own temp folder."""

    name = "process"

    def __init__(self, settings: ConductorSettings) -> None:
        self.settings = settings

    def plan(self, request: LaunchRequest) -> LaunchPlan:
        if request.role != "shell" or not self.settings.agent_sandbox:
            return LaunchPlan(argv=list(request.argv), env=dict(request.env), cwd=request.workspace)
        return self._sandboxed_shell(request)

    def _sandboxed_shell(self, request: LaunchRequest) -> LaunchPlan:
        if not request.workspace.is_dir():
            raise AgentError(f"the workspace {str(request.workspace)!r} is not a directory")
        conf = confinement_for(request.workspace, new_temp_dir(), self.settings)
        check_sandbox_available(conf, request.env, SHELL_SANDBOX_TOOLS)
        bwrap = shutil.which("bwrap", path=request.env.get("PATH"))
        if bwrap is None:  # not Linux: the agent's Bash has the OS's own sandbox, commands not
            raise AgentError(
                "agent.sandbox is on but a task's commands (`kind: command`, verify) can be "
                "sandboxed only on Linux, with bubblewrap; set CONDUCTOR_AGENT__SANDBOX=false "
                "to run them unconfined"
            )
        argv = bubblewrap_argv(
            bwrap,
            conf,
            request.argv,
            existing=paths_to_hide(conf),
            git_metadata=git_dirs(conf.workspace),
        )
        conf.temp_dir.mkdir(mode=0o700)

        async def cleanup() -> None:
            await asyncio.to_thread(remove_temp_dir, conf)

        env = {**request.env, "TMPDIR": str(conf.temp_dir)}
        return LaunchPlan(argv=argv, env=env, cwd=conf.workspace, cleanup=cleanup)


_IMPLEMENTATIONS: dict[str, str] = {
    "process": "claude_conductor.agents.placement:ProcessPlacement",
    "docker": "claude_conductor.agents.docker_placement:DockerPlacement",
    "kubernetes": "claude_conductor.agents.kubernetes_placement:KubernetesPlacement",
}
"""``agent.placement`` value -> ``module:class`` (a class taking the settings), imported only
when that placement is used, so the process tier never pays for a docker or kubernetes client."""


def get_placement(settings: ConductorSettings) -> Placement:
    """The placement ``agent.placement`` names."""
    name = settings.agent.placement
    target = _IMPLEMENTATIONS.get(name)
    if target is None:
        raise AgentError(
            f"agent.placement is {name!r}, which this installation does not provide; use one "
            f"of {', '.join(sorted(_IMPLEMENTATIONS))} (CONDUCTOR_AGENT__PLACEMENT)"
        )
    module_name, _, class_name = target.partition(":")
    factory = getattr(importlib.import_module(module_name), class_name)
    return cast(Placement, factory(settings))
