"""The Anthropic credentials block: agents take their key and endpoint from it (the scripted
model checks the key it receives), and the key shows up nowhere a person or a log could read
it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydantic import ValidationError
from surface_stack import BLOCK_KEY, BLOCK_NAME, ENV_KEY, SurfaceStack

from claude_conductor.client.connection import conductor_client, run_sync
from claude_conductor.credentials import (
    BLOCK_TYPE_SLUG,
    AnthropicCredentials,
    agent_base_env,
    apply_credentials,
    load_credentials,
)
from claude_conductor.demo.script_steps import text, tool_use
from claude_conductor.errors import NotFoundError
from claude_conductor.settings import AgentSettings, ConductorSettings
from helpers import git


def test_block_replaces_the_workers_model_credentials() -> None:
    block = AnthropicCredentials(api_key="sk-from-block-1234567890", base_url="http://gw:8080")
    env = {
        "PATH": "/bin",
        "ANTHROPIC_API_KEY": "sk-env",
        "ANTHROPIC_AUTH_TOKEN": "tok-env",
        "ANTHROPIC_BASE_URL": "http://env",
    }
    assert apply_credentials(env, block) == {
        "PATH": "/bin",
        "ANTHROPIC_API_KEY": "sk-from-block-1234567890",
        "ANTHROPIC_BASE_URL": "http://gw:8080",
    }
    # No base URL in the block: Anthropic's own API, not the worker's endpoint.
    bare = AnthropicCredentials(api_key="sk-from-block-1234567890")
    assert "ANTHROPIC_BASE_URL" not in apply_credentials(env, bare)


def test_block_never_shows_its_key_and_checks_its_url() -> None:
    block = AnthropicCredentials(api_key="sk-ant-secret-abcdefgh12345678")
    for shown in (repr(block), str(block), block.model_dump_json()):
        assert "sk-ant-secret" not in shown
    with pytest.raises(ValidationError, match="base_url must be an http"):
        AnthropicCredentials(api_key="k", base_url="ftp://example")
    with pytest.raises(ValidationError, match="must not carry a user or password"):
        AnthropicCredentials(api_key="k", base_url="https://user:pw@example.com")


async def test_without_a_block_the_environment_is_kept() -> None:
    settings = ConductorSettings(agent=AgentSettings())
    assert await agent_base_env(settings, {"ANTHROPIC_API_KEY": "x"}) == {"ANTHROPIC_API_KEY": "x"}


# ---------------------------------------------------------------- on the real stack


@pytest.mark.integration
def test_up_registers_the_block_type_and_prefect_can_register_it(
    surface_stack: SurfaceStack,
) -> None:
    async def block_type() -> str:
        async with conductor_client(surface_stack.settings) as client:
            found = await client.read_block_type_by_slug(BLOCK_TYPE_SLUG)
            return found.name

    assert run_sync(block_type()) == "Anthropic Credentials"
    env = {**surface_stack.env, "PREFECT_API_URL": surface_stack.settings.server.url}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "prefect",
            "block",
            "register",
            "-m",
            "claude_conductor.credentials",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "Anthropic Credentials" in out.stdout


@pytest.mark.integration
def test_agent_gets_key_and_url_from_the_block_and_never_shows_the_key(
    surface_stack: SurfaceStack,
) -> None:
    marker = surface_stack.model.add_script(
        "creds",
        [tool_use("Write", {"file_path": "creds.txt", "content": "ok\n"}), text("Wrote it.")],
    )
    out = surface_stack.cli(
        "run", "--prompt", f"write creds.txt {marker}", "--repo", str(surface_stack.repo),
        "--wait", "--json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["status"] == "succeeded", result
    assert git(surface_stack.repo, "show", f"{result['branch']}:creds.txt") == "ok\n"

    # The model (at the block's base URL, not the workers') saw the block's key, only it.
    requests = surface_stack.model.messages_requests("creds")
    assert requests
    keys = {{k.lower(): v for k, v in r.headers.items()}.get("x-api-key") for r in requests}
    assert keys == {BLOCK_KEY}

    # Nowhere to be read: the result, the run's logs, config show, the transcript, results.
    task_id = result["task_id"]
    logs = surface_stack.cli("tasks", "logs", task_id, "--json")
    shown = surface_stack.cli("config", "show")
    assert logs.returncode == 0 and shown.returncode == 0
    assert BLOCK_NAME in shown.stdout  # the block's name is shown, not what it holds
    texts = [out.stdout, out.stderr, logs.stdout, shown.stdout, shown.stderr]
    results_dir = surface_stack.settings.results_dir / task_id
    texts += [p.read_text(errors="replace") for p in results_dir.rglob("*") if p.is_file()]
    for blob in texts:
        assert BLOCK_KEY not in blob
        assert ENV_KEY not in blob


@pytest.mark.integration
def test_a_missing_block_names_the_setting(surface_stack: SurfaceStack) -> None:
    async def load() -> None:
        async with conductor_client(surface_stack.settings) as client:
            await load_credentials("no-such-block", client=client)

    with pytest.raises(NotFoundError) as caught:
        run_sync(load())
    assert caught.value.field == "agent.credentials_block"
    assert "agent.credentials_block = 'no-such-block'" in str(caught.value)
