"""The agent runtime with the REAL ``claude`` binary against the scripted Messages API.

Nothing is mocked: the CLI runs its real tool loop in a temp dir, writes files, is refused
by its permission mode, meets API errors and stalls, and is killed with its process group.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

from claude_conductor.agents.process import kill_registered_groups, registered_groups
from claude_conductor.agents.runtime import AgentOutcome, run_agent
from claude_conductor.agents.shell import run_shell
from claude_conductor.demo.script_steps import error, request_text, stall, text, tool_use
from claude_conductor.demo.scripted_model import ScriptedModel
from claude_conductor.models import (
    AgentEvent,
    PermissionDenied,
    SystemInit,
    TaskSpec,
    TaskStatus,
    ToolResult,
)
from claude_conductor.settings import ConductorSettings

pytestmark = pytest.mark.integration

PROJECT_MAIN = Path(__file__).parents[2] / "src/claude_conductor/demo/project/main.py"
SLEEPER = f"{sys.executable} -c 'import time; time.sleep(300)'"  # the CLI refuses a bare `sleep`


# --------------------------------------------------------------------------- helpers


def _proc_stat(pid: str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()


def live_pgid_members(pgid: int) -> list[int]:
    """Non-zombie processes in group ``pgid`` (read from /proc, independent of the code)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        fields = _proc_stat(pid)
        if fields and fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(pid))
    return found


def agent_processes(config_dir: Path) -> dict[int, int]:
    """``{pid: pgid}`` of live processes started for the agent using ``config_dir``."""
    needle = f"CLAUDE_CONFIG_DIR={config_dir}".encode()
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environ = handle.read().split(b"\0")
        except OSError:
            continue
        fields = _proc_stat(pid)
        if needle in environ and fields and fields[0] != "Z":
            found[int(pid)] = int(fields[2])
    return found


def tool_command_running(config_dir: Path) -> dict[int, int] | None:
    """The agent's processes once a Bash tool command runs: the CLI starts those in a
    session (and process group) of their own, outside the agent's group."""
    procs = agent_processes(config_dir)
    return procs if len(set(procs.values())) > 1 else None


def assert_all_gone(seen: dict[int, int], config_dir: Path) -> None:
    assert seen, "the test never saw the agent's processes"
    for pgid in set(seen.values()):
        assert live_pgid_members(pgid) == [], f"process group {pgid} still has live members"
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            pass  # the group is gone entirely
        else:  # only zombies may remain (waiting for init to reap them)
            assert live_pgid_members(pgid) == []
    assert agent_processes(config_dir) == {}


async def wait_for(condition: Callable[[], Any], timeout_seconds: float = 20) -> Any:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout_seconds}s")


class Agent:
    """Runs specs in a fresh workspace with the fixtures' settings and env."""

    def __init__(self, tmp_path: Path, settings: ConductorSettings, env: dict[str, str]):
        self.workspace = tmp_path / "workspace"
        self.workspace.mkdir()
        self.transcript = tmp_path / "transcript.jsonl"
        self.config_dir = tmp_path / "claude-config"
        self.settings, self.env = settings, env
        self.events: list[AgentEvent] = []

    async def run(self, spec: TaskSpec, settings: ConductorSettings | None = None) -> AgentOutcome:
        return await run_agent(
            spec,
            self.workspace,
            settings or self.settings,
            transcript_path=self.transcript,
            config_dir=self.config_dir,
            on_event=self.events.append,
            base_env=self.env,
        )

    def with_agent(self, **fields: Any) -> ConductorSettings:
        agent = self.settings.agent.model_copy(update=fields)
        return self.settings.model_copy(update={"agent": agent})


@pytest.fixture
def agent(tmp_path: Path, agent_settings: ConductorSettings, agent_env: dict[str, str]) -> Agent:
    return Agent(tmp_path, agent_settings, agent_env)


# --------------------------------------------------------------------------- edits


async def test_edit_task_writes_and_edits_files(
    agent: Agent, scripted_model: ScriptedModel
) -> None:
    (agent.workspace / "notes.txt").write_text("colour: red\n")
    marker = scripted_model.add_script(
        "edit",
        [
            tool_use("Write", {"file_path": "new.txt", "content": "fresh file\n"}),
            tool_use("Read", {"file_path": "notes.txt"}),
            tool_use("Edit", {"file_path": "notes.txt", "old_string": "red", "new_string": "blue"}),
            tool_use("Bash", {"command": "echo key=$ANTHROPIC_API_KEY", "description": "env"}),
            text("Wrote new.txt and changed the colour."),
        ],
    )
    outcome = await agent.run(TaskSpec(kind="refactor", prompt=f"Change things {marker}"))

    assert outcome.status is TaskStatus.SUCCEEDED, outcome.error
    assert (agent.workspace / "new.txt").read_text() == "fresh file\n"
    assert (agent.workspace / "notes.txt").read_text() == "colour: blue\n"
    result = outcome.result
    assert result is not None
    assert result.result == "Wrote new.txt and changed the colour."
    assert result.total_cost_usd > 0
    assert result.input_tokens > 0 and result.output_tokens > 0
    assert result.num_turns == 5
    init = next(e for e in agent.events if isinstance(e, SystemInit))
    assert outcome.session_id == result.session_id == init.session_id
    uuid.UUID(outcome.session_id or "")
    assert outcome.model and outcome.model == result.model
    assert outcome.exit_code == 0
    # Every event is in the transcript, typed, and the API key is masked everywhere.
    transcript = agent.transcript.read_text()
    adapter: TypeAdapter[AgentEvent] = TypeAdapter(AgentEvent)
    parsed = [adapter.validate_python(json.loads(ln)) for ln in transcript.splitlines()]
    assert parsed == agent.events
    assert agent.env["ANTHROPIC_API_KEY"] not in transcript
    bash_result = [e for e in agent.events if isinstance(e, ToolResult)][-1]
    assert bash_result.content.strip() == "key=***"
    # The CLI offered the editing tools, in the workspace the server saw.
    first = scripted_model.messages_requests("edit")[0]
    assert {"Write", "Edit", "Bash"} <= set(first.tool_names)
    assert first.cwd == str(agent.workspace)


async def test_builtin_demo_script_on_the_demo_project(agent: Agent) -> None:
    shutil.copy(PROJECT_MAIN, agent.workspace / "main.py")
    spec = TaskSpec(kind="refactor", prompt="Add a greeting helper. [script:demo]")
    outcome = await agent.run(spec)
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.error
    assert "def greet(name" in (agent.workspace / "greet.py").read_text()
    done = await run_shell("python3 main.py", agent.workspace, timeout_seconds=30)
    assert (done.exit_code, done.output_tail) == (0, "Hello, world!")
    assert "from greet import greet" in (agent.workspace / "main.py").read_text()


async def test_two_agents_share_one_server(
    tmp_path: Path,
    agent_settings: ConductorSettings,
    agent_env: dict[str, str],
    scripted_model: ScriptedModel,
) -> None:
    agents = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        agents.append(Agent(tmp_path / name, agent_settings, agent_env))
        scripted_model.add_script(
            name, [tool_use("Write", {"file_path": f"{name}.txt", "content": name}), text(name)]
        )
    outcomes = await asyncio.gather(
        *(
            a.run(TaskSpec(prompt=f"[script:{n}]"))
            for a, n in zip(agents, ("one", "two"), strict=True)
        )
    )
    assert [o.status for o in outcomes] == [TaskStatus.SUCCEEDED] * 2
    assert (agents[0].workspace / "one.txt").read_text() == "one"
    assert (agents[1].workspace / "two.txt").read_text() == "two"
    assert not (agents[0].workspace / "two.txt").exists()


# ------------------------------------------------------------- refusals, errors, limits


async def test_read_only_review_cannot_write(agent: Agent, scripted_model: ScriptedModel) -> None:
    (agent.workspace / "app.py").write_text("print('hi')\n")
    marker = scripted_model.add_script(
        "review",
        [
            tool_use("Read", {"file_path": "app.py"}),
            tool_use("Write", {"file_path": "app.py", "content": "hacked\n"}),
            text("One finding: app.py:1 prints instead of logging."),
        ],
    )
    outcome = await agent.run(TaskSpec(kind="code_review", prompt=f"Review app.py {marker}"))

    assert (agent.workspace / "app.py").read_text() == "print('hi')\n"
    assert outcome.status is TaskStatus.NEEDS_ATTENTION
    assert outcome.error is not None and "Write(" in outcome.error
    assert outcome.result is not None
    assert [d["tool_name"] for d in outcome.result.permission_denials] == ["Write"]
    assert any(isinstance(e, PermissionDenied) and e.tool_name == "Write" for e in agent.events)
    assert outcome.exit_code == 0  # the exit code alone would have said "fine"


@pytest.mark.parametrize(
    ("status_code", "expected"),
    [
        (401, "authentication failed: the API key was rejected (check ANTHROPIC_API_KEY)"),
        (429, "rate limited by the model API"),
        (529, "the model API is overloaded"),
    ],
)
async def test_api_errors_fail_fast_with_distinct_messages(
    agent: Agent, scripted_model: ScriptedModel, status_code: int, expected: str
) -> None:
    marker = scripted_model.add_script(f"api{status_code}", [error(status_code)])
    started = time.monotonic()
    outcome = await agent.run(TaskSpec(prompt=f"anything {marker}"))
    assert time.monotonic() - started < 15
    assert outcome.status is TaskStatus.FAILED
    assert outcome.error is not None and outcome.error.startswith(expected)
    assert outcome.result is not None and outcome.result.api_error_status == status_code


async def test_max_turns_exhausted(agent: Agent, scripted_model: ScriptedModel) -> None:
    (agent.workspace / "f.txt").write_text("x\n")
    marker = scripted_model.add_script("loop", [tool_use("Read", {"file_path": "f.txt"})] * 10)
    outcome = await agent.run(TaskSpec(prompt=f"loop {marker}", max_turns=2))
    assert outcome.status is TaskStatus.FAILED
    assert outcome.result is not None and outcome.result.subtype == "error_max_turns"
    assert outcome.error is not None and "max_turns (2)" in outcome.error


async def test_max_budget_exhausted(agent: Agent, scripted_model: ScriptedModel) -> None:
    (agent.workspace / "f.txt").write_text("x\n")
    pricey = tool_use("Read", {"file_path": "f.txt"}, input_tokens=500_000)
    marker = scripted_model.add_script("pricey", [pricey] * 5)
    outcome = await agent.run(TaskSpec(prompt=f"spend {marker}", max_budget_usd=0.05))
    assert outcome.status is TaskStatus.FAILED
    assert outcome.result is not None and outcome.result.subtype == "error_max_budget_usd"
    assert outcome.result.total_cost_usd > 0.05
    assert outcome.error is not None and "max_budget_usd ($0.05)" in outcome.error


async def test_a_five_megabyte_line(agent: Agent, scripted_model: ScriptedModel) -> None:
    answer = "z" * (5 * 1024 * 1024)
    marker = scripted_model.add_script("big", [text(answer)])
    outcome = await agent.run(TaskSpec(prompt=f"talk a lot {marker}"))
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.error
    assert outcome.result is not None and outcome.result.result == answer


async def test_a_prompt_too_long_for_argv_goes_through_stdin(
    agent: Agent, scripted_model: ScriptedModel
) -> None:
    marker = scripted_model.add_script("long", [text("read it all")])
    prompt = f"{marker} " + "context line\n" * 20_000  # about 260 KB, over the argv limit
    outcome = await agent.run(TaskSpec(prompt=prompt))
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.error
    sent = scripted_model.messages_requests("long")[0]
    assert "context line\n" * 19_999 in request_text(sent.body, first_user_only=True)


# ------------------------------------------------------- stalls, timeouts, cancellation


async def test_stalled_model_hits_the_inactivity_watchdog(
    agent: Agent, scripted_model: ScriptedModel
) -> None:
    marker = scripted_model.add_script("stall", [stall(120)])
    settings = agent.with_agent(inactivity_timeout_seconds=2)
    task = asyncio.create_task(agent.run(TaskSpec(prompt=f"hang {marker}"), settings))
    await wait_for(lambda: scripted_model.messages_requests("stall") or task.done())
    seen = agent_processes(agent.config_dir)
    outcome = await task
    assert outcome.status is TaskStatus.TIMED_OUT
    assert outcome.error is not None and "inactivity watchdog" in outcome.error
    assert outcome.duration_seconds < 15
    if seen:  # else a loaded machine took 2s to start the CLI
        assert_all_gone(seen, agent.config_dir)
    assert agent_processes(agent.config_dir) == {}


async def test_wall_clock_timeout_kills_tool_processes_too(
    agent: Agent, scripted_model: ScriptedModel
) -> None:
    marker = scripted_model.add_script(
        "busy", [tool_use("Bash", {"command": SLEEPER, "description": "wait"})]
    )
    spec = TaskSpec(prompt=f"busy {marker}", timeout_seconds=5)
    task = asyncio.create_task(agent.run(spec))
    seen = await wait_for(lambda: tool_command_running(agent.config_dir) or task.done())
    outcome = await task
    assert outcome.status is TaskStatus.TIMED_OUT
    assert outcome.error is not None and "wall-clock timeout of 5s" in outcome.error
    if isinstance(seen, dict):  # else a loaded machine took 5s to start the CLI
        assert_all_gone(seen, agent.config_dir)
    assert agent_processes(agent.config_dir) == {}


async def test_cli_killed_by_sigkill_looks_like_oom_and_its_tools_are_cleaned_up(
    agent: Agent, scripted_model: ScriptedModel
) -> None:
    marker = scripted_model.add_script(
        "oom", [tool_use("Bash", {"command": SLEEPER, "description": "wait"})]
    )
    task = asyncio.create_task(agent.run(TaskSpec(prompt=f"busy {marker}")))
    seen = await wait_for(lambda: tool_command_running(agent.config_dir))
    cli_pid = next(
        pid for pid in seen if b"stream-json" in Path(f"/proc/{pid}/cmdline").read_bytes()
    )
    os.kill(cli_pid, signal.SIGKILL)  # what the kernel's OOM killer does
    outcome = await task
    assert outcome.status is TaskStatus.FAILED
    assert outcome.exit_code == -signal.SIGKILL
    assert outcome.error is not None and "killed (possibly out of memory)" in outcome.error
    assert_all_gone(seen, agent.config_dir)


async def test_kill_registered_groups_stops_a_running_agent_from_a_hook(
    agent: Agent, scripted_model: ScriptedModel
) -> None:
    marker = scripted_model.add_script(
        "hook", [tool_use("Bash", {"command": SLEEPER, "description": "wait"})]
    )
    task = asyncio.create_task(agent.run(TaskSpec(prompt=f"busy {marker}")))
    seen = await wait_for(lambda: tool_command_running(agent.config_dir))
    assert len(registered_groups()) == 1  # only this agent: earlier runs unregistered theirs
    # Prefect runs crash/cancellation hooks synchronously, possibly off the event loop.
    assert await asyncio.to_thread(kill_registered_groups, 1.0) == 1
    outcome = await task
    assert outcome.status is TaskStatus.FAILED and outcome.result is None
    assert registered_groups() == {}
    assert_all_gone(seen, agent.config_dir)


async def test_cancelling_run_agent_kills_the_group_and_reraises(
    agent: Agent, scripted_model: ScriptedModel
) -> None:
    marker = scripted_model.add_script("hang", [stall(120)])
    task = asyncio.create_task(agent.run(TaskSpec(prompt=f"hang {marker}")))
    await wait_for(lambda: scripted_model.messages_requests("hang"))
    seen = agent_processes(agent.config_dir)
    task.cancel()
    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 10
    assert_all_gone(seen, agent.config_dir)


async def test_cli_lingering_after_its_result_is_stopped(
    agent: Agent, scripted_model: ScriptedModel
) -> None:
    background = {"command": SLEEPER, "description": "bg", "run_in_background": True}
    marker = scripted_model.add_script("linger", [tool_use("Bash", background), text("done")])
    outcome = await agent.run(TaskSpec(prompt=f"linger {marker}"))
    assert outcome.status is TaskStatus.SUCCEEDED, outcome.error
    assert outcome.result is not None and outcome.result.result == "done"
    assert outcome.duration_seconds < 20
    assert agent_processes(agent.config_dir) == {}


# --------------------------------------------------------------------------- run_shell


async def test_run_shell_reports_exit_code_and_output_tail(tmp_path: Path) -> None:
    done = await run_shell("echo out; echo err >&2; exit 3", tmp_path, timeout_seconds=30)
    assert (done.exit_code, done.timed_out) == (3, False)
    assert done.output_tail.splitlines() == ["out", "err"]
    assert done.duration_seconds >= 0
    many = await run_shell("seq 1 1000", tmp_path, timeout_seconds=30)
    assert many.output_tail.splitlines() == [str(n) for n in range(951, 1001)]


async def test_run_shell_redacts_secrets(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "SERVICE_TOKEN": "tok-0123456789"}
    done = await run_shell("echo token=$SERVICE_TOKEN", tmp_path, timeout_seconds=30, env=env)
    assert done.output_tail == "token=***"


async def test_run_shell_timeout_kills_the_group(tmp_path: Path) -> None:
    command = (
        "sleep 300 & echo $! > child.pid; "
        "setsid sleep 301 & echo $! > detached.pid; "
        "echo started; wait"
    )
    started = time.monotonic()
    done = await run_shell(command, tmp_path, timeout_seconds=1, kill_grace_seconds=1)
    assert time.monotonic() - started < 10
    assert done.timed_out and done.exit_code is None
    assert "started" in done.output_tail and "timeout" in done.output_tail
    for name in ("child.pid", "detached.pid"):
        pid = (tmp_path / name).read_text().strip()
        fields = _proc_stat(pid)
        assert fields is None or fields[0] == "Z", f"{name} ({pid}) survived the timeout"


async def test_run_shell_cancel_kills_the_group(tmp_path: Path) -> None:
    task = asyncio.create_task(
        run_shell("sleep 300 & echo $! > child.pid; wait", tmp_path, timeout_seconds=60)
    )
    pid_file = tmp_path / "child.pid"
    await wait_for(lambda: pid_file.exists() and pid_file.read_text().strip())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    fields = _proc_stat(pid_file.read_text().strip())
    assert fields is None or fields[0] == "Z"


async def test_run_shell_leaves_no_background_children(tmp_path: Path) -> None:
    done = await run_shell("sleep 300 & echo $! > child.pid; echo ok", tmp_path, timeout_seconds=30)
    assert (done.exit_code, done.output_tail) == (0, "ok")
    fields = _proc_stat((tmp_path / "child.pid").read_text().strip())
    assert fields is None or fields[0] == "Z"
