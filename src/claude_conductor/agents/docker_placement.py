"""The ``docker`` placement: each launch (the ``claude`` CLI, a ``kind: command`` command, a
``verify`` command) runs in a sibling container of its own, started by the engine through the
Docker socket of the worker container (docker tier; see docs/architecture.md).

The container (``conductor-agent-<task>-<role>-<hex>``) is made from settings alone
(``agent.docker``), never from the task or a job variable:

- the agent image, as a non-root user (the engine's uid:gid by default; root is refused), a
  read-only root filesystem, every capability dropped, ``no-new-privileges``, memory (swap
  included), CPU and process limits, tmpfs ``/tmp`` and ``HOME``;
- mounts at the same paths as in the worker: the task's worktree (read-write), its ``.git``
  file and the repository's git directory (read-only: the agent cannot repoint or reconfigure
  the git the engine later runs to commit), the agent's own ``CLAUDE_CONFIG_DIR``; nothing else
  of the Conductor home, no other task's worktree, no Docker socket, no secret file;
- the agents network only (internal; its only way out is the egress proxy), and the
  scrubbed environment the engine asked for plus the proxy variables: no Prefect credential.

The local command is ``python -m claude_conductor.system.docker_attach`` (the Docker SDK; the
image has no docker CLI). Its cleanup removes the container by name whatever happened: a killed
attach helper would otherwise leave the container running.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import socket
import sys
from pathlib import Path

from claude_conductor.agents.placement import LaunchPlan, LaunchRequest
from claude_conductor.errors import AgentError
from claude_conductor.settings import ConductorSettings, DockerPlacementSettings
from claude_conductor.system.docker_attach import ContainerConfig

__all__ = [
    "AGENT_HOME",
    "CONTAINER_PREFIX",
    "ENGINE_LABEL",
    "ROLE_LABEL",
    "STACK_LABEL",
    "TASK_LABEL",
    "DockerPlacement",
    "container_config",
    "git_binds",
    "remove_container",
]

logger = logging.getLogger(__name__)

CONTAINER_PREFIX = "conductor-agent-"
AGENT_HOME = "/home/agent"
"""The agent's HOME inside its container: a tmpfs, like /tmp."""
STACK_LABEL = "io.claude-conductor.stack"
ROLE_LABEL = "io.claude-conductor.role"
TASK_LABEL = "io.claude-conductor.task"
ENGINE_LABEL = "io.claude-conductor.engine"
"""The host name of the engine's container: a restarted worker removes what its dead engines
left (``tiers.docker.recover``)."""

_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]+")
# Set by the placement, whatever the engine's environment says.
_OVERRIDDEN = frozenset(
    {"HOME", "TMPDIR", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy",
     "no_proxy"}
)  # fmt: skip


def _container_name(task_id: str, role: str) -> str:
    task = _NAME_UNSAFE.sub("-", task_id).strip("-.")[:80] or "task"
    return f"{CONTAINER_PREFIX}{task}-{role}-{secrets.token_hex(3)}"


def _bind(source: Path, mode: str) -> str:
    text = str(source)
    if ":" in text or "," in text:
        raise AgentError(
            f"cannot mount {text!r} into an agent container: the docker placement needs paths "
            "without ':' or ','; move the repository or the Conductor home"
        )
    return f"{text}:{text}:{mode}"


def git_binds(workspace: Path) -> list[str]:
    """Read-only mounts git needs in a worktree: its ``.git`` file (so the agent cannot point
    it elsewhere) and the repository's git directory (objects, refs, config; the worktree's own
    admin folder is inside it). Empty when ``workspace`` is not a linked worktree."""
    dot_git = workspace / ".git"
    if dot_git.is_dir():  # a full checkout: its git directory is inside the workspace
        return [_bind(dot_git, "ro")]
    if not dot_git.is_file():
        return []
    first = dot_git.read_text(encoding="utf-8", errors="replace").splitlines()[:1]
    if not first or not first[0].startswith("gitdir:"):
        return [_bind(dot_git, "ro")]
    admin = Path(first[0].removeprefix("gitdir:").strip())
    if not admin.is_absolute():
        admin = (workspace / admin).resolve()
    common = admin
    commondir = admin / "commondir"
    if commondir.is_file():
        pointer = Path(commondir.read_text(encoding="utf-8").strip())
        common = pointer if pointer.is_absolute() else (admin / pointer).resolve()
    return [_bind(dot_git, "ro"), _bind(common, "ro")]


def _user(docker: DockerPlacementSettings) -> str:
    user = docker.user or f"{os.getuid()}:{os.getgid()}"
    if user.split(":", 1)[0] == "0":
        raise AgentError(
            "agent containers never run as root, and the engine runs as root: set "
            "agent.docker.user (CONDUCTOR_AGENT__DOCKER__USER) to the uid:gid that owns the "
            "Conductor home and the repositories"
        )
    return user


def container_config(settings: ConductorSettings, request: LaunchRequest) -> ContainerConfig:
    """The container for ``request``: pure but for reading the worktree's ``.git`` file."""
    docker = settings.agent.docker
    if not docker.network:
        raise AgentError(
            "agent.placement is 'docker' but agent.docker.network is not set: name the "
            "internal network agents run on (CONDUCTOR_AGENT__DOCKER__NETWORK); the docker "
            "tier sets it to <stack>-agents"
        )
    binds = [_bind(request.workspace, "rw"), *git_binds(request.workspace)]
    config_dir = request.env.get("CLAUDE_CONFIG_DIR")
    if config_dir:
        binds.append(_bind(Path(config_dir), "rw"))
    env_names = sorted(set(request.env) - _OVERRIDDEN | {"HOME", "TMPDIR"})
    if docker.proxy_url:
        env_names += ["HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy",
                      "no_proxy"]  # fmt: skip
    labels = {
        ROLE_LABEL: "agent",
        TASK_LABEL: request.task_id,
        ENGINE_LABEL: socket.gethostname(),
        "io.claude-conductor.launch": request.role,
    }
    if docker.stack:
        labels[STACK_LABEL] = docker.stack
    tmp = f"rw,nosuid,nodev,size={docker.tmp_size},mode=1777"
    return ContainerConfig(
        name=_container_name(request.task_id, request.role),
        image=docker.image,
        user=_user(docker),
        workdir=str(request.workspace),
        network=docker.network,
        env_names=sorted(set(env_names)),
        binds=binds,
        tmpfs={"/tmp": tmp, AGENT_HOME: tmp},
        labels=labels,
        memory=docker.memory.lower(),
        nano_cpus=round(docker.cpus * 1_000_000_000),
        pids_limit=docker.pids_limit,
        stdin=request.stdin_used,
        docker_host=_docker_host(docker),
    )


def _docker_host(docker: DockerPlacementSettings) -> str | None:
    return docker.docker_host or os.environ.get("DOCKER_HOST") or None


def _container_env(docker: DockerPlacementSettings, request: LaunchRequest) -> dict[str, str]:
    env = {k: v for k, v in request.env.items() if k not in _OVERRIDDEN}
    env.update({"HOME": AGENT_HOME, "TMPDIR": "/tmp"})
    if docker.proxy_url:
        no_proxy = ",".join(["localhost", "127.0.0.1", *docker.no_proxy])
        for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
            env[name] = docker.proxy_url
        env["NO_PROXY"] = env["no_proxy"] = no_proxy
    return env


def _remove_now(name: str, docker_host: str | None) -> None:
    from docker.errors import APIError, DockerException, NotFound

    import docker

    try:
        client = docker.APIClient(base_url=docker_host or None, version="auto")
        client.remove_container(name, force=True)
        logger.info("removed agent container %s", name)
    except NotFound:
        pass
    except APIError as exc:
        if exc.status_code != 409:  # 409: its removal is already in progress
            logger.warning("could not remove agent container %s: %s", name, exc)
    except DockerException as exc:
        logger.warning("could not remove agent container %s: %s", name, exc)


async def remove_container(name: str, docker_host: str | None = None) -> None:
    """Remove a container by name, running or not; a missing one is fine."""
    await asyncio.to_thread(_remove_now, name, docker_host)


class DockerPlacement:
    """Each launch in its own hardened sibling container (see the module docstring)."""

    name = "docker"

    def __init__(self, settings: ConductorSettings) -> None:
        self.settings = settings

    def plan(self, request: LaunchRequest) -> LaunchPlan:
        config = container_config(self.settings, request)
        argv = [sys.executable, "-m", "claude_conductor.system.docker_attach", config.to_json(),
                "--", *request.argv]  # fmt: skip

        async def cleanup() -> None:
            await remove_container(config.name, config.docker_host)

        # The attach helper's own environment carries the values of the container's variables
        # (the config names them only); nothing else of the engine's environment.
        return LaunchPlan(
            argv=argv,
            env=_container_env(self.settings.agent.docker, request),
            cwd=request.workspace,
            cleanup=cleanup,
        )
