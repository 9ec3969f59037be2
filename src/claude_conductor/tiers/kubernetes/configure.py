"""The Kubernetes tier's configure step, run in the cluster by the Job ``conductor-configure``
(``python -m claude_conductor.tiers.kubernetes.configure``) once the Prefect API answers: the
agents pool (served by the worker pods of either mode: the warm pool's agent-pool, or the
Job-per-task mode's job-worker), the coordinator pool, the queues, the deployments and the
automation that marks unresponsive runs Crashed. With the Job-per-task mode
(``agent.placement=kubernetes``) it also renders the agent Job once from the settings, so a
broken template, image or resource setting fails here rather than on the first task.
Idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from claude_conductor.agents.kubernetes_placement import describe_agent_job
from claude_conductor.client.connection import conductor_client
from claude_conductor.errors import ConductorError
from claude_conductor.settings import ConductorSettings, load_settings
from claude_conductor.work_pools import pools
from claude_conductor.work_pools.control_plane import register_control_plane

__all__ = ["configure", "main"]

logger = logging.getLogger(__name__)


async def configure(settings: ConductorSettings) -> list[str]:
    """Pools, queues, deployments and the zombie automation; one line per thing done."""
    done: list[str] = []
    if settings.agent.placement == "kubernetes":
        done.append(describe_agent_job(settings))
    async with conductor_client(settings) as client:
        pool = await pools.ensure_agent_pool(client, settings)
        where = (
            "a Job per task" if settings.agent.placement == "kubernetes" else "in the worker pods"
        )
        done.append(
            f"agent pool {pool.name}: {pool.concurrency_limit} slots, agents run {where} "
            f"(placement {settings.agent.placement})"
        )
        coordinators = await pools.ensure_coordinator_pool(client, settings)
        done.append(f"coordinator pool {coordinators.name}: {coordinators.concurrency_limit} slots")
        done += await register_control_plane(client, settings)
    return done


def main(argv: Sequence[str] | None = None) -> int:
    del argv
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        for line in asyncio.run(configure(load_settings())):
            print(line, flush=True)
    except ConductorError as exc:
        print(f"configure failed: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
