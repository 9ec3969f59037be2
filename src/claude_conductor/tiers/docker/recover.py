"""What a docker-tier worker does first when it (re)starts: clean up after its previous life.

The engines of a pool's runs are processes of that pool's worker container (one worker per
pool per stack), so when the container restarts (killed, out of memory, the host rebooted, a
crash) every run it was executing lost its engine. The image's entrypoint runs
``python -m claude_conductor.tiers.docker.recover --pool POOL --role worker|coordinator``
before ``prefect worker start``:

1. agent containers of this stack whose engine is gone (their ``io.claude-conductor.engine``
   label names this container, or a container that no longer runs) are removed;
2. the pool's runs still Pending, Running or Cancelling are settled: a run whose task has
   ``retries`` left (agent pool only; a Pending run never started its work) is scheduled again
   from the start; a Cancelling run ends Cancelled; any other ends Crashed with a message that
   says the worker died. Nothing stays Running for the zombie automation to find later.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.states import AwaitingRetry, Cancelled, Crashed

from claude_conductor.agents.docker_placement import ENGINE_LABEL, ROLE_LABEL, STACK_LABEL
from claude_conductor.client.connection import conductor_client
from claude_conductor.errors import ConductorError
from claude_conductor.settings import ConductorSettings, load_settings
from claude_conductor.work_pools.pools import busy_filter

__all__ = ["WORKER_DIED", "Decision", "decide", "main", "remove_orphan_agents", "settle_runs"]

logger = logging.getLogger(__name__)

WORKER_DIED = (
    "the worker running this task died (its container was killed or restarted) before the "
    "task finished"
)


@dataclass(frozen=True)
class Decision:
    """What becomes of one interrupted run."""

    action: str  # "retry" | "crash" | "cancel"
    message: str


def decide(run: FlowRun, *, role: str) -> Decision:
    """Pure: the fate of a run whose engine died with its worker."""
    state = run.state.type if run.state else None
    if state is StateType.CANCELLING:
        return Decision("cancel", f"cancelled; {WORKER_DIED}")
    spec: Any = (run.parameters or {}).get("spec") or {}
    retries = spec.get("retries", 0) if isinstance(spec, dict) else 0
    retries = retries if isinstance(retries, int) and not isinstance(retries, bool) else 0
    if role == "worker" and state is StateType.PENDING:
        return Decision("retry", f"{WORKER_DIED}; it had not started: running it again")
    if role == "worker" and run.run_count <= retries:
        return Decision(
            "retry", f"{WORKER_DIED}; running it again (attempt {run.run_count + 1} of "
            f"{retries + 1}, per the task's retries)"
        )  # fmt: skip
    hint = "" if role != "worker" else "; set `retries` on the task to have it run again"
    return Decision("crash", WORKER_DIED + hint)


async def settle_runs(client: PrefectClient, pool: str, *, role: str) -> list[tuple[str, str]]:
    """Apply ``decide`` to the pool's busy runs; returns (run name, action) pairs."""
    runs = await client.read_flow_runs(
        flow_run_filter=busy_filter(),
        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
    )
    done: list[tuple[str, str]] = []
    for run in runs:
        decision = decide(run, role=role)
        state: State[Any]
        if decision.action == "retry":
            state = AwaitingRetry(message=decision.message)
        elif decision.action == "cancel":
            state = Cancelled(message=decision.message)
        else:
            state = Crashed(message=decision.message)
        await client.set_flow_run_state(run.id, state, force=True)
        done.append((run.name, decision.action))
    return done


def remove_orphan_agents(stack: str, docker_host: str | None = None) -> list[str]:
    """Remove this stack's agent containers whose engine's container is this one (restarted)
    or no longer runs; returns their names."""
    from docker.errors import DockerException, NotFound

    import docker

    me = socket.gethostname()
    client = docker.DockerClient(base_url=docker_host) if docker_host else docker.from_env()
    removed: list[str] = []
    try:
        containers = client.containers.list(
            all=True, filters={"label": [f"{STACK_LABEL}={stack}", f"{ROLE_LABEL}=agent"]}
        )
        for container in containers:
            engine = container.labels.get(ENGINE_LABEL, "")
            if engine and engine != me:
                try:
                    if client.containers.get(engine).status == "running":
                        continue
                except NotFound:
                    pass
            container.remove(force=True)
            removed.append(container.name or container.id or "?")
    except DockerException as exc:
        raise ConductorError(f"cannot list or remove agent containers: {exc}") from exc
    finally:
        client.close()
    return removed


async def recover(settings: ConductorSettings, pool: str, role: str) -> list[str]:
    lines: list[str] = []
    docker_settings = settings.agent.docker
    if settings.agent.placement == "docker" and docker_settings.stack:
        removed = await asyncio.to_thread(
            remove_orphan_agents, docker_settings.stack, docker_settings.docker_host
        )
        lines += [f"removed agent container {name} (its engine is gone)" for name in removed]
    async with conductor_client(settings) as client:
        for name, action in await settle_runs(client, pool, role=role):
            lines.append(f"run {name}: {action} (its engine died with the previous {role})")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m claude_conductor.tiers.docker.recover",
        description="Clean up after a docker-tier worker's previous life (run before it starts).",
    )
    parser.add_argument("--pool", required=True)
    parser.add_argument("--role", choices=["worker", "coordinator"], required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        for line in asyncio.run(recover(load_settings(), args.pool, args.role)):
            print(f"recover: {line}", flush=True)
    except ConductorError as exc:
        # Never keep the worker from starting: the zombie automation is the backstop.
        print(f"recover: skipped ({exc})", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
