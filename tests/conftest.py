"""Shared fixtures: a scripted Messages API for the real ``claude`` binary, and its env.

Use them from any test to run a real agent offline::

    async def test_something(scripted_model, agent_env, agent_settings, tmp_path):
        marker = scripted_model.add_script("mine", [tool_use("Write", {...}), text("done")])
        spec = TaskSpec(kind="generic", prompt=f"do it {marker}", timeout_seconds=60)
        outcome = await run_agent(spec, workspace, agent_settings,
                                  transcript_path=tmp_path / "t.jsonl",
                                  config_dir=tmp_path / "claude", base_env=agent_env)

The marker ``[script:NAME]`` in the prompt selects the script; every agent may share one
server. ``scripted_model.requests`` records what the CLI sent.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from claude_conductor.agents.argv import find_claude
from claude_conductor.demo.scripted_model import ScriptedModel
from claude_conductor.errors import AgentError
from claude_conductor.settings import AgentSettings, ConductorSettings

pytest_plugins = ["stack_fixtures"]

SCRIPTED_API_KEY = "sk-scripted-test-key-0123456789"
"""The API key the fixtures give agents: the scripted model accepts any key, and tests can
check that it never shows up in a transcript or a log."""


@pytest.fixture
def scripted_model() -> Iterator[ScriptedModel]:
    """A running scripted Messages API on 127.0.0.1 (a fresh one, with an empty request log,
    for each test). Register scripts with ``add_script(name, steps)``; the ``demo`` script
    is built in."""
    with ScriptedModel() as model:
        yield model


@pytest.fixture
def claude_path() -> Path:
    """The real ``claude`` binary (bundled in claude-agent-sdk); skips when it is missing."""
    try:
        return find_claude(ConductorSettings(agent=AgentSettings()))
    except AgentError as exc:
        pytest.skip(f"{exc} (install the dev dependencies: pip install -e '.[dev]')")


@pytest.fixture(scope="session")
def agent_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty HOME for test agents. The CLI's Bash tool sources the user's shell rc files;
    a developer's ``~/.bashrc`` (pyenv init and its rehash lock, say) must not slow or change
    what a scripted agent's commands print."""
    return tmp_path_factory.mktemp("agent-home")


@pytest.fixture
def agent_env(scripted_model: ScriptedModel, claude_path: Path, agent_home: Path) -> dict[str, str]:
    """A base environment that points the real CLI at ``scripted_model``: pass it as
    ``run_agent(..., base_env=agent_env)``. API errors are not retried
    (``CLAUDE_CODE_MAX_RETRIES=0``), so error tests take about a second."""
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(agent_home),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "ANTHROPIC_BASE_URL": scripted_model.url,
        "ANTHROPIC_API_KEY": SCRIPTED_API_KEY,
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }


@pytest.fixture
def agent_settings(tmp_path: Path) -> ConductorSettings:
    """Settings with a temp home and short grace periods, for fast agent tests."""
    return ConductorSettings(
        home=tmp_path / "conductor-home",
        agent=AgentSettings(
            inactivity_timeout_seconds=30, result_grace_seconds=1, kill_grace_seconds=1
        ),
    )
