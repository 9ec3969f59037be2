"""The Kubernetes tier's configure step, run in the cluster by the Job ``conductor-configure``
(``python -m claude_conductor.tiers.kubernetes.configure``) once the Prefect API answers:
the agents pool (warm mode: the pool the warm agent workers serve; jobs mode: a kubernetes
pool with Conductor's agent Job template filled in with this stack's namespace, image and
model endpoint), the coordinator pool, the queues, the deployments and the automation that
marks unresponsive runs Crashed. Idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.client.schemas.objects import WorkPool
from prefect.exceptions import ObjectNotFound
from pydantic import BaseModel, ConfigDict, Field

from claude_conductor.client.connection import conductor_client
from claude_conductor.credentials import register_block_types
from claude_conductor.errors import ConductorError, InputError
from claude_conductor.settings import ConductorSettings, load_settings
from claude_conductor.tiers.docker.configure import ZOMBIE_AUTOMATION, ensure_zombie_automation
from claude_conductor.tiers.kubernetes.agent_jobs import agent_job_template
from claude_conductor.work_pools import pools
from claude_conductor.work_pools.deployments import apply_deployments

__all__ = ["ClusterSpec", "configure", "ensure_job_agent_pool", "main"]

logger = logging.getLogger(__name__)

AgentMode = Literal["warm", "jobs"]


class ClusterSpec(BaseModel):
    """What the configure Job is told by conductor-config (``CONDUCTOR_K8S_*``)."""

    model_config = ConfigDict(frozen=True)

    mode: AgentMode = Field(description="warm: agent worker pods; jobs: a Job per task.")
    namespace: str = Field(min_length=1, description="Namespace the agent Jobs run in.")
    image: str = Field(min_length=1, description="Image of the agent Jobs (pinned tag).")
    model_url: str = Field(min_length=1, description="ANTHROPIC_BASE_URL of the agents.")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ClusterSpec:
        mode = env.get("CONDUCTOR_K8S_AGENT_MODE", "warm")
        if mode not in ("warm", "jobs"):
            raise InputError(
                f"CONDUCTOR_K8S_AGENT_MODE={mode!r}: use warm (agent worker pods) or jobs "
                "(a Job per task)",
                field="CONDUCTOR_K8S_AGENT_MODE",
                value=mode,
            )
        return cls(
            mode=mode,
            namespace=env.get("CONDUCTOR_K8S_NAMESPACE", "claude-conductor"),
            image=env.get("CONDUCTOR_IMAGE", "claude-conductor:0.1.0"),
            model_url=env.get("CONDUCTOR_MODEL_URL", "https://api.anthropic.com"),
        )


async def ensure_job_agent_pool(
    client: PrefectClient, settings: ConductorSettings, template: dict[str, Any]
) -> WorkPool:
    """Create or update the agents pool as a kubernetes pool with ``template``."""
    name = settings.worker.pool
    description = (
        "Claude Conductor agents (kubernetes tier): one Job per task, one slot per agent; "
        "queues urgent, normal, low."
    )
    try:
        pool = await client.read_work_pool(name)
    except ObjectNotFound:
        await client.create_work_pool(
            WorkPoolCreate(
                name=name,
                type="kubernetes",
                description=description,
                base_job_template=template,
                concurrency_limit=settings.worker.agents,
            )
        )
    else:
        if pool.type != "kubernetes":
            raise InputError(
                f"work pool {name!r} exists with type {pool.type!r}, not 'kubernetes'; delete "
                "it (`prefect work-pool delete`) or choose another pool (CONDUCTOR_WORKER__POOL)",
                field="worker.pool",
                value=name,
            )
        await client.update_work_pool(
            name,
            WorkPoolUpdate(
                concurrency_limit=settings.worker.agents,
                base_job_template=template,
                description=description,
                is_paused=False,
            ),
        )
    await pools._ensure_queues(client, name)
    return await client.read_work_pool(name)


async def configure(settings: ConductorSettings, spec: ClusterSpec) -> list[str]:
    """Pools, queues, deployments and the zombie automation; one line per thing done."""
    done: list[str] = []
    async with conductor_client(settings) as client:
        if spec.mode == "jobs":
            template = agent_job_template(
                namespace=spec.namespace, image=spec.image, model_url=spec.model_url
            )
            pool = await ensure_job_agent_pool(client, settings, template)
            done.append(f"agent pool {pool.name}: kubernetes Jobs of {spec.image}")
        else:
            pool = await pools.ensure_agent_pool(client, settings)
            done.append(f"agent pool {pool.name}: warm pool ({pool.type})")
        coordinators = await pools.ensure_coordinator_pool(client, settings)
        done.append(f"coordinator pool {coordinators.name}: {coordinators.concurrency_limit} slots")
        ids = await apply_deployments(client, settings)
        done.append("deployments: " + ", ".join(sorted(ids)))
        await register_block_types(client)
        await ensure_zombie_automation(client)
        done.append(f"automation: {ZOMBIE_AUTOMATION}")
    return done


def main(argv: Sequence[str] | None = None) -> int:
    del argv
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        spec = ClusterSpec.from_env(os.environ)
        for line in asyncio.run(configure(load_settings(), spec)):
            print(line, flush=True)
    except ConductorError as exc:
        print(f"configure failed: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
