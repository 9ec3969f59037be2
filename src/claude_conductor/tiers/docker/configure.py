"""The docker tier's ``configure`` step, run inside the compose stack once the Prefect server is
healthy (``conductor-entrypoint configure``, i.e. ``python -m claude_conductor.tiers.docker.configure
configure``): install the stack's config file into the Conductor home (the data folder), create
or update the agent pool and the coordinator pool (``WORKER_TYPE`` pools with Conductor's locked
template: the engines run inside the worker containers, so no job variable may change what runs
there), the queues, the deployments, and the automation that marks unresponsive flow runs
Crashed.

Everything here is idempotent: ``conductor up --tier docker`` runs it on every ``up``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import WorkPool
from prefect.exceptions import ObjectNotFound
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from claude_conductor import config_file
from claude_conductor.agents.docker_placement import STACK_LABEL
from claude_conductor.client.connection import conductor_client
from claude_conductor.errors import ConductorError, InputError
from claude_conductor.settings import ConductorSettings, load_settings
from claude_conductor.work_pools import pools
from claude_conductor.work_pools.control_plane import register_control_plane

__all__ = [
    "STACK_LABEL",
    "WORKER_TYPE",
    "AgentContainerSpec",
    "configure",
    "ensure_stack_pools",
    "install_config",
    "main",
]

logger = logging.getLogger(__name__)

WORKER_TYPE = "process"
"""The worker type of both docker-tier pools: Prefect's stock process worker (starting an agent's
container dominates a task's start here, not the engine's; issue 10). The one place to switch;
the workers take their type from their pool."""

_STACK_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_MEMORY_RE = re.compile(r"^[1-9][0-9]*[bkmgBKMG]?$")
# Keys of an imported config the stack decides itself: its home, its tier, its API.
_STACK_OWNED = ("home", "tier", "server")


class AgentContainerSpec(BaseModel):
    """What this stack's agent containers look like: the values the compose file passes to the
    ``configure`` step (``CONDUCTOR_STACK``, ``CONDUCTOR_IMAGE`` ...)."""

    model_config = ConfigDict(frozen=True)

    stack: str = Field(description="The stack's name; names its networks and volumes.")
    image: str = Field(description="The image agent containers run.")
    repos_dir: Path = Field(
        description="Absolute host folder of the repositories; mounted at the same path."
    )
    data_dir: Path = Field(
        description="Absolute host folder of the stack's Conductor home (worktrees, results, "
        "clone cache); mounted at the same path in the worker and in agent containers."
    )
    agent_uid: int = Field(ge=1, description="uid agent containers run as (never 0).")
    agent_gid: int = Field(ge=0, description="gid agent containers run as.")
    agent_cpus: float = Field(gt=0, le=256, description="CPUs of one agent container.")
    agent_memory: str = Field(description="Memory of one agent container, e.g. `2g`.")
    model_url: str = Field(description="The model endpoint agents talk to (ANTHROPIC_BASE_URL).")

    @field_validator("stack")
    @classmethod
    def _stack_name(cls, value: str) -> str:
        if not _STACK_RE.match(value):
            raise ValueError(
                f"stack name {value!r}: use lowercase letters, digits, '-' and '_' "
                "(it names Docker networks and volumes)"
            )
        return value

    @field_validator("repos_dir", "data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        if not value.is_absolute():
            raise ValueError(
                f"folder {str(value)!r} must be an absolute host path "
                "(it is mounted at the same path in the worker and in agent containers)"
            )
        return value

    @field_validator("agent_memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not _MEMORY_RE.match(value):
            raise ValueError(f"agent memory {value!r}: give a size like 512m or 2g")
        return value.lower()

    @property
    def network(self) -> str:
        return f"{self.stack}-agents"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AgentContainerSpec:
        """Parse the compose variables; InputError naming the variable when one is wrong."""
        names = {
            "stack": "CONDUCTOR_STACK",
            "image": "CONDUCTOR_IMAGE",
            "repos_dir": "CONDUCTOR_REPOS_DIR",
            "data_dir": "CONDUCTOR_DATA_DIR",
            "agent_uid": "CONDUCTOR_AGENT_UID",
            "agent_gid": "CONDUCTOR_AGENT_GID",
            "agent_cpus": "CONDUCTOR_AGENT_CPUS",
            "agent_memory": "CONDUCTOR_AGENT_MEMORY",
            "model_url": "CONDUCTOR_MODEL_URL",
        }
        missing = [var for var in names.values() if not env.get(var)]
        if missing:
            raise InputError(f"{missing[0]} is not set: the compose file passes it to configure")
        try:
            return cls.model_validate({field: env[var] for field, var in names.items()})
        except ValidationError as exc:
            err = exc.errors()[0]
            var = names.get(str(err["loc"][0]), str(err["loc"][0]))
            msg = str(err["msg"]).removeprefix("Value error, ")
            raise InputError(f"{var}={err.get('input')!r}: {msg}", field=var) from exc


def install_config(source: Path, home: Path) -> Path | None:
    """Copy the stack's config file (exported settings) to ``<home>/config.yaml``, leaving out
    what the stack sets itself; None when there is no source file. InputError when invalid."""
    if not source.is_file():
        return None
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InputError(
            f"{source}: not valid YAML ({exc}); fix the stack's conductor.yaml"
        ) from exc
    if not isinstance(data, dict):
        raise InputError(f"{source}: expected a mapping of settings, found {type(data).__name__}")
    data = {k: v for k, v in data.items() if k not in _STACK_OWNED}
    known = set(ConductorSettings.model_fields)
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"{source}: unknown setting {unknown[0]!r}; known: {sorted(known)}")
    try:
        ConductorSettings.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InputError(f"{source}: setting {where!r}: {err['msg']}", field=where) from exc
    return config_file.write_config(home, data, sort_keys=True)


async def _drop_pool_of_another_type(client: PrefectClient, name: str) -> None:
    """A stack made before the engines moved into the worker has a ``docker`` agent pool: it
    is replaced (its deployments are registered again right after)."""
    try:
        pool = await client.read_work_pool(name)
    except ObjectNotFound:
        return
    if pool.type == "docker" and WORKER_TYPE != "docker":
        logger.info("replacing work pool %s (type docker) by a %s pool", name, WORKER_TYPE)
        await client.delete_work_pool(name)


async def ensure_stack_pools(client: PrefectClient, settings: ConductorSettings) -> list[WorkPool]:
    """The agent pool (one slot per agent) and the coordinator pool, both ``WORKER_TYPE``
    pools with the locked template, not paused, with the priority queues."""
    await _drop_pool_of_another_type(client, settings.worker.pool)
    agents = await pools.ensure_locked_pool(
        client,
        settings.worker.pool,
        worker_type=WORKER_TYPE,
        concurrency_limit=settings.worker.agents,
        description="Claude Conductor agents (docker tier): each task's engine runs in the "
        "worker, its agent in a container of its own; one slot per agent; queues urgent, "
        "normal, low.",
    )
    coordinators = await pools.ensure_locked_pool(
        client,
        settings.worker.coordinator_pool,
        worker_type=WORKER_TYPE,
        concurrency_limit=settings.worker.coordinator_slots,
        description="Claude Conductor fan-out parents: they wait for subtasks on the agent pool.",
    )
    return [agents, coordinators]


async def configure(settings: ConductorSettings) -> list[str]:
    """Pools, queues, deployments and the zombie automation on the stack's API. Returns what
    it did, one line each."""
    done: list[str] = []
    async with conductor_client(settings) as client:
        for pool in await ensure_stack_pools(client, settings):
            done.append(
                f"pool {pool.name}: {pool.type}, locked template, {pool.concurrency_limit} slots"
            )
        done += await register_control_plane(client, settings)
    return done


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m claude_conductor.tiers.docker.configure",
        description="Configure a docker-tier stack (run by the stack's `configure` service).",
    )
    parser.add_argument("command", choices=["configure"])
    parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    stack = os.environ.get("CONDUCTOR_STACK", "conductor")
    try:
        home = Path(os.environ.get("CONDUCTOR_HOME", "/var/lib/conductor"))
        source = Path(os.environ.get("CONDUCTOR_CONFIG_SOURCE", "/etc/conductor/conductor.yaml"))
        installed = install_config(source, home)
        print(f"config: {installed or 'defaults (no stack config file)'}", flush=True)
        settings = load_settings()
        for line in asyncio.run(configure(settings)):
            print(line, flush=True)
    except ConductorError as exc:
        print(f"configure failed: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    print(f"stack {stack} configured", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
