"""One real standalone stack for the Prefect-native surface (schedules, the MCP server, the
credentials block): Prefect server, pools, deployments and process workers, whose agents are
the real ``claude`` talking to the scripted model.

The agents' model credentials come only from an ``anthropic-credentials`` block on the
server (``agent.credentials_block``): the workers' own ``ANTHROPIC_*`` variables point at a
closed port with a wrong key, so a task only succeeds when the block was used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from claude_conductor.agents.argv import find_claude
from claude_conductor.client.connection import conductor_client, run_sync
from claude_conductor.credentials import AnthropicCredentials
from claude_conductor.demo.scripted_model import ScriptedModel
from claude_conductor.errors import ConductorError
from claude_conductor.settings import ConductorSettings
from claude_conductor.tiers import standalone
from helpers import make_repo
from stack_fixtures import free_port, make_settings

T = TypeVar("T")

BLOCK_NAME = "team-anthropic"
BLOCK_KEY = "sk-block-secret-0f1e2d3c4b5a69788796"
"""The key kept in the block: the only one the scripted model may see."""
ENV_KEY = "sk-env-wrong-key-1122334455667788"
"""The workers' own ANTHROPIC_API_KEY: the block must win over it."""


@dataclass
class SurfaceStack:
    settings: ConductorSettings
    model: ScriptedModel
    env: dict[str, str]
    repo: Path

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """``conductor ARGS`` as a user runs it against this stack."""
        return subprocess.run(
            [sys.executable, "-m", "claude_conductor.cli.main", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def cli_json(self, *args: str) -> Any:
        out = self.cli(*args, "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)


def wait_for(predicate: Callable[[], T], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except ConductorError:  # a busy machine: the API answered too slowly this time
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def _save_block(settings: ConductorSettings, base_url: str) -> None:
    async with conductor_client(settings) as client:
        block = AnthropicCredentials(api_key=BLOCK_KEY, base_url=base_url)
        await block.asave(BLOCK_NAME, overwrite=True, client=client)


@pytest.fixture(scope="session")
def surface_stack(
    tmp_path_factory: pytest.TempPathFactory, agent_home: Path
) -> Iterator[SurfaceStack]:
    try:
        find_claude(ConductorSettings())
    except Exception as exc:  # pragma: no cover - only without the dev install
        pytest.skip(f"no claude binary: {exc}")
    root = tmp_path_factory.mktemp("surface-stack")
    repo = make_repo(root / "project")
    settings = make_settings(root / "home", free_port(), agents=2)
    with ScriptedModel() as model:
        clean = {
            k: v for k, v in os.environ.items() if not k.startswith(("CONDUCTOR_", "PREFECT_"))
        }
        env = {
            **clean,
            # Wrong on purpose: agents must take the block's key and endpoint instead.
            "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
            "ANTHROPIC_API_KEY": ENV_KEY,
            "CLAUDE_CODE_MAX_RETRIES": "0",
            "HOME": str(agent_home),
            "CONDUCTOR_HOME": str(settings.home),
            "CONDUCTOR_SERVER__PORT": str(settings.server.port),
            "CONDUCTOR_WORKER__QUERY_SECONDS": "0.5",
            "CONDUCTOR_DASHBOARD__ENABLED": "false",
            "CONDUCTOR_AGENT__RESULT_GRACE_SECONDS": "1",
            "CONDUCTOR_AGENT__KILL_GRACE_SECONDS": "1",
            "CONDUCTOR_AGENT__CREDENTIALS_BLOCK": BLOCK_NAME,
        }
        try:
            standalone.up(settings, base_env=env, timeout_seconds=180)
            run_sync(_save_block(settings, model.url))
            yield SurfaceStack(settings=settings, model=model, env=env, repo=repo)
        finally:
            standalone.down(settings, grace_seconds=5)
