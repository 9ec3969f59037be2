"""The configure Job's work (``python -m claude_conductor.tiers.kubernetes.configure``) against a
real Prefect server: the agents pool, queues and deployments in both modes; in the Job-per-task
mode it renders the agent Job from the settings first, so a broken template fails before
anything is created."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.exceptions import ObjectNotFound

from claude_conductor.client.connection import conductor_client, run_sync
from claude_conductor.errors import InputError
from claude_conductor.settings import load_settings
from claude_conductor.tiers.kubernetes.configure import configure
from claude_conductor.work_pools.deployments import TASK_DEPLOYMENT

pytestmark = [pytest.mark.kubernetes, pytest.mark.integration]


@pytest.fixture
def api_url(prefect_api_url: str) -> str:
    return prefect_api_url


def test_jobs_mode_checks_the_agent_job_and_sets_up_the_pool(api_url: str, tmp_path: Path) -> None:
    settings = load_settings(
        home=tmp_path,
        server={"api_url": api_url},
        worker={"pool": "agents-jobs"},
        agent={
            "placement": "kubernetes",
            "kubernetes": {"namespace": "team-a", "image": "registry.example.com/cc:0.1.0"},
        },
    )
    done = run_sync(configure(settings))
    assert any(
        "agent Jobs: registry.example.com/cc:0.1.0 in namespace team-a" in line for line in done
    ), done
    assert any("agents run a Job per task" in line for line in done), done
    run_sync(configure(settings))  # idempotent: a second configure updates in place

    async def check() -> None:
        async with conductor_client(settings) as client:
            pool = await client.read_work_pool("agents-jobs")
            # The engines run in Conductor's workers (`conductor` type) in both modes.
            assert pool.type == "conductor"
            assert pool.concurrency_limit == settings.worker.agents
            queues = {q.name for q in await client.read_work_queues(work_pool_name=pool.name)}
            assert {"urgent", "normal", "low"} <= queues
            await client.read_deployment_by_name(
                f"{TASK_DEPLOYMENT.flow_name}/{TASK_DEPLOYMENT.name}"
            )

    run_sync(check())


def test_warm_mode_says_where_agents_run(api_url: str, tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, server={"api_url": api_url})
    done = run_sync(configure(settings))
    assert any("agents run in the worker pods (placement process)" in line for line in done)
    assert not any(line.startswith("agent Jobs") for line in done)


def test_a_broken_agent_template_fails_before_anything_is_created(
    api_url: str, tmp_path: Path
) -> None:
    broken = tmp_path / "job.json"
    broken.write_text('{"kind": "Pod"}')
    settings = load_settings(
        home=tmp_path,
        server={"api_url": api_url},
        worker={"pool": "never-created"},
        agent={"placement": "kubernetes", "kubernetes": {"template_path": str(broken)}},
    )
    with pytest.raises(InputError, match="must be a batch/v1 Job") as info:
        run_sync(configure(settings))
    assert info.value.exit_code == 2

    async def absent() -> None:
        async with conductor_client(settings) as client:
            with pytest.raises(ObjectNotFound):
                await client.read_work_pool("never-created")

    run_sync(absent())
