"""The conductor worker with real agents (the real ``claude`` against the scripted model):
cancelling leaves no process of the run alive, a killed flow-run process ends Crashed with a
message (and ``retries`` runs it again), and a worker that dies loses no work (issue 12).

One stack serves the module (the ``agent_stack`` fixture of test_standalone_agents); the worker
crash tests kill its worker and bring it back with ``conductor up``, so they come last.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest
from prefect.client.schemas.objects import FlowRun
from test_standalone_agents import AgentStack, _wait_for, agent_stack

from claude_conductor.client.connection import conductor_client
from claude_conductor.client.tasks import find_run
from claude_conductor.demo.script_steps import Request, Step, stall, text, tool_use
from claude_conductor.system import processes
from claude_conductor.tiers.standalone import launch
from helpers import claude_pids_for
from helpers import git as _git

pytestmark = pytest.mark.integration

__all__ = ["agent_stack"]  # the module-scoped stack, shared by these tests


def _run(stack: AgentStack, task_id: str) -> FlowRun:
    async def go() -> FlowRun:
        async with conductor_client(stack.settings) as client:
            return await find_run(client, task_id)

    return asyncio.run(go())


def _engine_pid(stack: AgentStack, task_id: str) -> int:
    """The flow run's process (Prefect's ``infrastructure_pid``, host:pid)."""

    def pid() -> int | None:
        value = _run(stack, task_id).infrastructure_pid or ""
        _, _, number = value.rpartition(":")
        return int(number) if number.isdigit() else None

    found: int = _wait_for(pid, 60, "the run's process id")
    return found


def _supervisor(pid: int) -> int:
    return psutil.Process(pid).ppid()


def _final(stack: AgentStack, task_id: str, timeout: float = 180) -> FlowRun:
    run: FlowRun = _wait_for(
        lambda: (r := _run(stack, task_id)).state is not None and r.state.is_final() and r,
        timeout,
        f"{task_id} to end",
    )
    return run


def _gone(pids: list[int]) -> bool:
    return not any(processes.pid_alive(p) for p in pids)


def test_cancel_leaves_no_process_of_the_run(agent_stack: AgentStack) -> None:
    marker = agent_stack.model.add_script("cancel-me", [stall(600)])
    task_id = agent_stack.submit("--prompt", f"hang {marker}")
    agents = _wait_for(lambda: claude_pids_for(task_id), 90, "the agent to start")
    engine = _engine_pid(agent_stack, task_id)
    supervisor = _supervisor(engine)
    out = agent_stack.cli("tasks", "cancel", task_id)
    assert out.returncode == 0, out.stderr
    run = _final(agent_stack, task_id)
    assert run.state is not None and run.state.is_cancelled(), run.state
    _wait_for(lambda: _gone([*agents, engine, supervisor]), 30, "every process of the run to end")


def test_a_killed_flow_run_process_is_crashed_with_a_message(agent_stack: AgentStack) -> None:
    marker = agent_stack.model.add_script("killed-engine", [stall(600)])
    task_id = agent_stack.submit("--prompt", f"hang {marker}")
    agents = _wait_for(lambda: claude_pids_for(task_id), 90, "the agent to start")
    temp = Path(psutil.Process(agents[0]).environ()["CLAUDE_CODE_TMPDIR"])
    assert temp.is_dir() and temp.name.startswith("ccd-r")  # tagged with the run
    engine = _engine_pid(agent_stack, task_id)
    os.kill(engine, signal.SIGKILL)
    run = _final(agent_stack, task_id)
    assert run.state is not None and run.state.is_crashed(), run.state
    assert "-9" in (run.state.message or ""), run.state.message
    # The agent the killed engine left behind is stopped by the run's supervisor, which also
    # removes the agent's temp folder (the engine could not).
    _wait_for(lambda: _gone(agents), 30, "the orphaned agent to be stopped")
    _wait_for(lambda: not temp.exists(), 30, "the killed run's temp folder to be removed")


def test_a_killed_flow_run_process_is_run_again_per_retries(agent_stack: AgentStack) -> None:
    calls = {"n": 0}

    def first_hangs(request: Request) -> Step:
        calls["n"] += 1
        return stall(600) if calls["n"] == 1 else text("Done on the second run.")

    marker = agent_stack.model.add_script("rerun", [first_hangs])
    spec = agent_stack.repo.parent / "rerun.yaml"
    spec.write_text(f"prompt: again {marker}\nrepo: {agent_stack.repo}\nretries: 1\n")
    out = agent_stack.cli("run", str(spec))
    assert out.returncode == 0, out.stderr
    task_id = next(x for x in out.stderr.splitlines() if x.startswith("submitted ")).split()[1]
    _wait_for(lambda: claude_pids_for(task_id), 90, "the agent to start")
    _wait_for(lambda: calls["n"] >= 1, 60, "the agent to ask the model")
    os.kill(_engine_pid(agent_stack, task_id), signal.SIGKILL)
    doc = agent_stack.show(task_id, wait=True)
    assert doc["result"]["status"] == "succeeded", doc["result"]
    assert doc["result"]["summary"] == "Done on the second run."
    run = _run(agent_stack, task_id)
    assert run.run_count == 2

    async def history() -> list[str]:
        async with conductor_client(agent_stack.settings) as client:
            states = await client.read_flow_run_states(run.id)
            return [s.type.value for s in states]

    assert "CRASHED" in asyncio.run(history())


def _gated_tasks(
    stack: AgentStack, tmp_path: Path, count: int
) -> tuple[list[str], threading.Event]:
    """``count`` tasks whose agents all wait, in the scripted model, until the test opens the
    gate (sandboxed agents share no file outside their worktrees), then write ``kept.txt``."""
    arrived = [0]
    met = threading.Condition()
    gate = threading.Event()

    def wait_at_the_gate(request: Request) -> Step:
        with met:
            arrived[0] += 1
            met.notify_all()
        gate.wait(120)
        return tool_use("Write", {"file_path": "kept.txt", "content": "kept\n"})

    marker = stack.model.add_script(
        f"gated-{tmp_path.name}", [wait_at_the_gate, text("Finished after the worker died.")]
    )
    ids = [stack.submit("--prompt", f"gated {n} {marker}") for n in range(count)]
    _wait_for(lambda: arrived[0] >= count, 120, "every agent to reach the gate")
    return ids, gate


def _worker_processes(stack: AgentStack) -> tuple[int, list[int]]:
    worker = processes.read_daemon(stack.settings, launch.WORKER)
    assert worker is not None and worker.alive
    return worker.pid, [p.pid for p in psutil.Process(worker.pid).children(recursive=True)]


def test_work_in_flight_survives_a_worker_crash(agent_stack: AgentStack, tmp_path: Path) -> None:
    ids, gate = _gated_tasks(agent_stack, tmp_path, 2)
    engines = [_engine_pid(agent_stack, t) for t in ids]
    worker, descendants = _worker_processes(agent_stack)
    os.kill(worker, signal.SIGKILL)
    _wait_for(lambda: not processes.pid_alive(worker), 10, "the worker to die")
    gate.set()  # the agents finish only now, with no worker left
    for task_id in ids:
        run = _final(agent_stack, task_id)
        assert run.state is not None and run.state.is_completed(), run.state
        doc: dict[str, Any] = agent_stack.show(task_id)
        result = doc["result"]
        assert result["status"] == "succeeded", result
        assert _git(agent_stack.repo, "show", f"{result['branch']}:kept.txt") == "kept\n"
    # Nothing of the dead worker is left: forkserver, supervisors, engines, agents.
    _wait_for(lambda: _gone([*descendants, *engines]), 30, "the runs' processes to end")

    up = agent_stack.cli("up", timeout=240)
    assert up.returncode == 0, up.stderr
    for task_id in ids:  # the next worker runs nothing twice
        run = _run(agent_stack, task_id)
        assert run.run_count == 1 and run.state is not None and run.state.is_completed()


def test_a_run_that_cannot_finish_after_a_worker_crash_is_crashed_at_the_next_start(
    agent_stack: AgentStack, tmp_path: Path
) -> None:
    marker = agent_stack.model.add_script("lost", [stall(600)])
    task_id = agent_stack.submit("--prompt", f"lost {marker}")
    agents = _wait_for(lambda: claude_pids_for(task_id), 90, "the agent to start")
    engine = _engine_pid(agent_stack, task_id)
    worker, _ = _worker_processes(agent_stack)
    os.kill(worker, signal.SIGKILL)  # the worker dies, and the run's process with it
    os.kill(engine, signal.SIGKILL)
    _wait_for(lambda: _gone([*agents, engine]), 30, "the run's processes to end")
    assert _run(agent_stack, task_id).state.is_running()  # type: ignore[union-attr]

    up = agent_stack.cli("up", timeout=240)
    assert up.returncode == 0, up.stderr
    run = _final(agent_stack, task_id, timeout=60)
    assert run.state is not None and run.state.is_crashed(), run.state
    assert "worker running it died" in (run.state.message or ""), run.state.message
