"""The placement seam: the runtime spawns what the placement plans, and its cleanup always runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from claude_conductor.agents import placement as placement_module
from claude_conductor.agents.placement import (
    LaunchPlan,
    LaunchRequest,
    ProcessPlacement,
    get_placement,
)
from claude_conductor.agents.shell import run_shell
from claude_conductor.errors import AgentError
from claude_conductor.settings import ConductorSettings


def test_process_placement_runs_the_agent_as_asked(tmp_path: Path) -> None:
    request = LaunchRequest("t1", "agent", ["/bin/true"], {"PATH": "/bin"}, tmp_path, 5)
    plan = get_placement(ConductorSettings(home=tmp_path)).plan(request)
    assert isinstance(get_placement(ConductorSettings(home=tmp_path)), ProcessPlacement)
    assert (plan.argv, plan.env, plan.cwd) == (["/bin/true"], {"PATH": "/bin"}, tmp_path)


def test_a_placement_that_is_not_installed_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(placement_module._IMPLEMENTATIONS, "docker", raising=False)
    settings = ConductorSettings(home=tmp_path, agent={"placement": "docker"})  # type: ignore[arg-type]
    with pytest.raises(
        AgentError, match=r"agent\.placement is 'docker'.*CONDUCTOR_AGENT__PLACEMENT"
    ):
        get_placement(settings)


class _Wrapping:
    """A placement that runs the work through `env` with one variable added, and records its
    cleanups: what a container placement does with `docker run`, without an engine."""

    name = "wrapping"

    def __init__(self) -> None:
        self.cleanups = 0

    def plan(self, request: LaunchRequest) -> LaunchPlan:
        async def cleanup() -> None:
            self.cleanups += 1

        return LaunchPlan(
            argv=["/usr/bin/env", "PLACED=yes", *request.argv],
            env=dict(request.env),
            cwd=request.workspace,
            cleanup=cleanup,
        )


def test_shell_work_runs_through_the_placement_and_is_cleaned_up(tmp_path: Path) -> None:
    placed = _Wrapping()
    done = asyncio.run(
        run_shell("echo placed=$PLACED", tmp_path, 30, {"PATH": "/usr/bin:/bin"}, placement=placed)
    )
    assert done.exit_code == 0 and "placed=yes" in done.output_tail
    assert placed.cleanups == 1


def test_cleanup_runs_on_timeout_too(tmp_path: Path) -> None:
    placed = _Wrapping()
    done = asyncio.run(
        run_shell("sleep 30", tmp_path, 0.5, {"PATH": "/usr/bin:/bin"}, placement=placed,
                  kill_grace_seconds=0.5)
    )  # fmt: skip
    assert done.timed_out and placed.cleanups == 1
