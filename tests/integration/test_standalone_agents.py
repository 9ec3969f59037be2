"""The standalone tier with real agents: the real Prefect server and process workers run
`conductor-task` flow runs whose agents are the real `claude` binary talking to the scripted
model. Driven through the `conductor` CLI, as a user would.

One stack serves the module (agents=2); the restart test is last.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from claude_conductor.agents.argv import find_claude
from claude_conductor.demo.script_steps import Request, Step, slow, stall, text, tool_use
from claude_conductor.demo.scripted_model import ScriptedModel
from claude_conductor.settings import ConductorSettings
from claude_conductor.system import processes
from claude_conductor.tiers import standalone
from helpers import claude_pids_for as _claude_pids_for
from helpers import git as _git
from helpers import make_repo
from stack_fixtures import free_port, make_settings

pytestmark = pytest.mark.integration

API_KEY = "sk-stack-test-key-abcdef123456"


@dataclass
class AgentStack:
    settings: ConductorSettings
    model: ScriptedModel
    env: dict[str, str]
    repo: Path

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "claude_conductor.cli.main", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def submit(self, *args: str) -> str:
        out = self.cli("run", *args, "--repo", str(self.repo))
        assert out.returncode == 0, out.stderr
        line = next(x for x in out.stderr.splitlines() if x.startswith("submitted "))
        return line.split()[1]

    def show(self, task_id: str, *, wait: bool = False) -> dict[str, Any]:
        out = self.cli("tasks", "show", task_id, "--json", *(["--wait"] if wait else []))
        assert out.returncode in (0, 1), out.stderr
        doc: dict[str, Any] = json.loads(out.stdout)
        return doc


@pytest.fixture(scope="module")
def agent_stack(tmp_path_factory: pytest.TempPathFactory, agent_home: Path) -> Iterator[AgentStack]:
    try:
        find_claude(ConductorSettings())
    except Exception as exc:  # pragma: no cover - only without the dev install
        pytest.skip(f"no claude binary: {exc}")
    root = tmp_path_factory.mktemp("agents-stack")
    repo = make_repo(root / "project")
    settings = make_settings(root / "home", free_port(), agents=2)
    with ScriptedModel() as model:
        clean = {
            k: v for k, v in os.environ.items() if not k.startswith(("CONDUCTOR_", "PREFECT_"))
        }
        env = {
            **clean,
            "ANTHROPIC_BASE_URL": model.url,
            "ANTHROPIC_API_KEY": API_KEY,
            "CLAUDE_CODE_MAX_RETRIES": "0",
            "HOME": str(agent_home),
            "CONDUCTOR_HOME": str(settings.home),
            "CONDUCTOR_SERVER__PORT": str(settings.server.port),
            "CONDUCTOR_WORKER__QUERY_SECONDS": "0.5",
            "CONDUCTOR_DASHBOARD__ENABLED": "false",
            "CONDUCTOR_AGENT__RESULT_GRACE_SECONDS": "1",
            "CONDUCTOR_AGENT__KILL_GRACE_SECONDS": "1",
        }
        try:
            standalone.up(settings, base_env=env, timeout_seconds=180)
            yield AgentStack(settings=settings, model=model, env=env, repo=repo)
        finally:
            standalone.down(settings, grace_seconds=5)


def _wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_submit_wait_status_and_logs(agent_stack: AgentStack) -> None:
    marker = agent_stack.model.add_script(
        "hello",
        [tool_use("Write", {"file_path": "hello.txt", "content": "hello\n"}), text("Wrote hello.")],
    )
    out = agent_stack.cli(
        "run",
        "--prompt",
        f"say hello {marker}",
        "--repo",
        str(agent_stack.repo),
        "--kind",
        "generic",
        "--wait",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["status"] == "succeeded"
    assert result["files_changed"] == ["hello.txt"]
    assert result["cost_usd"] > 0 and result["session_id"]
    branch = result["branch"]
    assert _git(agent_stack.repo, "show", f"{branch}:hello.txt") == "hello\n"

    status = agent_stack.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["healthy"] and info["agents"] == 2

    listed = json.loads(agent_stack.cli("tasks", "list", "--json").stdout)
    assert any(
        row["task_id"] == result["task_id"] and row["status"] == "succeeded" for row in listed
    )

    logs = agent_stack.cli("tasks", "logs", result["task_id"])
    assert logs.returncode == 0, logs.stderr
    assert "agent uses Write" in logs.stdout
    assert API_KEY not in logs.stdout

    diff = agent_stack.cli("tasks", "diff", result["task_id"])
    assert diff.returncode == 0, diff.stderr
    assert "+++ b/hello.txt" in diff.stdout and "+hello" in diff.stdout


def test_show_wait_json_reports_the_state_the_run_ended_in(agent_stack: AgentStack) -> None:
    marker = agent_stack.model.add_script(
        "slowly", [slow("Done, slowly.", chunks=4, delay_seconds=1.5)]
    )
    task_id = agent_stack.submit("--prompt", f"slowly {marker}")
    doc = agent_stack.show(task_id, wait=True)
    assert doc["result"]["status"] == "succeeded", doc["result"]
    assert doc["state"] == "Completed", doc


def _barrier(parties: int, timeout_seconds: float = 60) -> Any:
    """A step that answers only once ``parties`` agents have reached it (or after the
    timeout), then one more second. It waits in the scripted model: the agents' sandboxed
    commands cannot share a file or a socket outside their own worktrees."""
    arrived = [0]
    met = threading.Condition()

    def step(request: Request) -> Step:
        with met:
            arrived[0] += 1
            met.notify_all()
            met.wait_for(lambda: arrived[0] >= parties, timeout=timeout_seconds)
        time.sleep(1)
        return tool_use("Write", {"file_path": "done.txt", "content": "done\n"})

    return step


def test_eight_tasks_two_agents_never_more_than_two_at_once(agent_stack: AgentStack) -> None:
    # Each agent waits until a second agent has reached the same step too (or 60 s): the two
    # slots are then certainly used together, however the submissions are staggered.
    marker = agent_stack.model.add_script(
        "busy",
        [
            tool_use("Bash", {"command": "echo working"}),
            _barrier(parties=2),
            text("Done."),
        ],
    )
    ids = [agent_stack.submit("--prompt", f"work {n} {marker}") for n in range(8)]
    results = [agent_stack.show(t, wait=True)["result"] for t in ids]
    assert [r["status"] for r in results] == ["succeeded"] * 8, [r["error"] for r in results]
    assert len({r["branch"] for r in results}) == 8
    spans = [
        (datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"]))
        for r in results
    ]
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, delta in edges:
        running += delta
        peak = max(peak, running)
    assert peak <= 2, f"{peak} agents ran at once with 2 slots"
    assert peak == 2, "the two slots were never used together"


def test_fanout_aggregates_and_keeps_results_of_the_others(
    agent_stack: AgentStack, tmp_path: Path
) -> None:
    marker = agent_stack.model.add_script(
        "part", [tool_use("Write", {"file_path": "part.txt", "content": "x\n"}), text("Part done.")]
    )
    task = tmp_path / "fan.yaml"
    task.write_text(
        f"kind: generic\ntitle: Four parts\nprompt: split\nrepo: {agent_stack.repo}\n"
        "subtasks:\n"
        f"  - prompt: part one {marker}\n"
        f"  - prompt: part two {marker}\n"
        f"  - prompt: part three {marker}\n"
        "  - kind: command\n    command: echo broken; exit 4\n"
    )
    out = agent_stack.cli("run", str(task), "--wait", "--json", timeout=300)
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    assert report["status"] == "failed"
    subs = report["subtasks"]
    assert len(subs) == 4
    assert [s["status"] for s in subs] == ["succeeded", "succeeded", "succeeded", "failed"]
    assert all(s["task_id"].startswith(report["task_id"] + "-s") for s in subs)
    assert "1 of 4" in report["error"]
    assert "exited with code 4" in subs[3]["error"]
    for sub in subs[:3]:
        assert _git(agent_stack.repo, "show", f"{sub['branch']}:part.txt") == "x\n"


def test_cancel_a_running_task_stops_its_agent(agent_stack: AgentStack) -> None:
    marker = agent_stack.model.add_script("hang", [stall(600)])
    task_id = agent_stack.submit("--prompt", f"hang {marker}")
    pids = _wait_for(lambda: _claude_pids_for(task_id), 90, "the agent to start")
    out = agent_stack.cli("tasks", "cancel", task_id)
    assert out.returncode == 0, out.stderr
    _wait_for(lambda: not any(processes.pid_alive(p) for p in pids), 30, "the agent to die")
    doc = _wait_for(
        lambda: (d := agent_stack.show(task_id))["state"] in ("Cancelled", "Crashed") and d,
        60,
        "the run to end",
    )
    assert doc["state"] == "Cancelled"


def test_agent_killed_from_outside_is_retried_then_succeeds(agent_stack: AgentStack) -> None:
    calls = {"n": 0}

    def first_hangs(request: Request) -> Step:
        calls["n"] += 1
        return stall(600) if calls["n"] == 1 else text("Recovered on the retry.")

    marker = agent_stack.model.add_script("flaky", [first_hangs])
    spec = agent_stack.repo.parent / "flaky.yaml"
    spec.write_text(f"prompt: flaky {marker}\nrepo: {agent_stack.repo}\nretries: 1\n")
    out = agent_stack.cli("run", str(spec))
    assert out.returncode == 0, out.stderr
    task_id = next(x for x in out.stderr.splitlines() if x.startswith("submitted ")).split()[1]
    (pid,) = _wait_for(lambda: _claude_pids_for(task_id), 90, "the agent to start")
    _wait_for(lambda: calls["n"] >= 1, 60, "the agent to ask the model")
    os.kill(pid, signal.SIGKILL)
    doc = agent_stack.show(task_id, wait=True)
    assert doc["result"]["status"] == "succeeded", doc["result"]
    assert calls["n"] == 2
    assert doc["result"]["summary"] == "Recovered on the retry."


def test_agent_killed_without_retries_fails_with_a_message(agent_stack: AgentStack) -> None:
    marker = agent_stack.model.add_script("doomed", [stall(600)])
    task_id = agent_stack.submit("--prompt", f"doomed {marker}")
    (pid,) = _wait_for(lambda: _claude_pids_for(task_id), 90, "the agent to start")
    os.kill(pid, signal.SIGKILL)
    doc = agent_stack.show(task_id, wait=True)
    assert doc["state"] == "Failed"
    assert doc["result"]["status"] == "failed"
    assert "killed" in doc["result"]["error"]


def test_queued_tasks_survive_a_restart(agent_stack: AgentStack) -> None:
    from claude_conductor.client.connection import conductor_client, run_sync

    settings = agent_stack.settings

    async def pause() -> None:
        from prefect.client.schemas.actions import WorkPoolUpdate

        async with conductor_client(settings) as client:
            await client.update_work_pool(settings.worker.pool, WorkPoolUpdate(is_paused=True))

    run_sync(pause())
    marker = agent_stack.model.add_script("later", [text("Ran after the restart.")])
    ids = [agent_stack.submit("--prompt", f"later {n} {marker}") for n in range(2)]
    assert all(agent_stack.show(t)["state"] in ("Scheduled", "Late") for t in ids)
    down = agent_stack.cli("down")
    assert down.returncode == 0, down.stderr
    up = agent_stack.cli("up", timeout=240)
    assert up.returncode == 0, up.stderr
    for task_id in ids:
        doc = agent_stack.show(task_id, wait=True)
        assert doc["result"]["status"] == "succeeded", doc
        assert doc["result"]["summary"] == "Ran after the restart."
