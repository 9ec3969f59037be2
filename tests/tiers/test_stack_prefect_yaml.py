"""``prefect deploy --all`` with the repository's prefect.yaml, for real, against the stack's
server: it must not prompt (no stdin, as in CI) and must produce the deployments Conductor
registers itself."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from claude_conductor.client.connection import conductor_client
from claude_conductor.tiers.standalone import launch
from claude_conductor.work_pools.deployments import DEPLOYMENTS, PULL_STEPS
from stack_fixtures import Stack

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


async def _snapshot(stack: Stack) -> dict[str, dict[str, Any]]:
    out = {}
    async with conductor_client(stack.settings) as client:
        for definition in DEPLOYMENTS:
            dep = await client.read_deployment_by_name(definition.full_name)
            out[definition.full_name] = {
                "entrypoint": dep.entrypoint,
                "pool": dep.work_pool_name,
                "queue": dep.work_queue_name,
                "pull_steps": dep.pull_steps,
                "parameters": dep.parameters,
                "tags": sorted(dep.tags),
                "schedules": [
                    (s.slug, s.active, getattr(s.schedule, "cron", None)) for s in dep.schedules
                ],
                "enforce": dep.enforce_parameter_schema,
                # `prefect deploy` computes it from the flow's typed `spec: TaskSpec`.
                "schema": dep.parameter_openapi_schema,
            }
    return out


def test_prefect_deploy_all_runs_unattended_and_matches(
    conductor_stack: Stack, tmp_path: Path
) -> None:
    registered = asyncio.run(_snapshot(conductor_stack))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {
        "PREFECT_API_URL": launch.local_api_url(conductor_stack.settings),
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    deployed = asyncio.run(_snapshot(conductor_stack))
    assert deployed == registered
    assert all(d["pull_steps"] == PULL_STEPS for d in deployed.values())
