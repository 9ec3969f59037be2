"""`conductor mcp` driven by the official `mcp` SDK's own stdio client, as Claude Code would
drive it: tools with schemas, a task submitted and read back (result, logs, diff), another
cancelled, and clear tool errors for bad arguments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from surface_stack import SurfaceStack, wait_for

from claude_conductor.demo.script_steps import last_tool_result, stall, text, tool_use
from claude_conductor.system import processes
from helpers import claude_pids_for, git

pytestmark = pytest.mark.integration

TOOLS = {
    "submit_task",
    "list_tasks",
    "show_task",
    "task_logs",
    "task_diff",
    "cancel_task",
    "retry_task",
    "list_schedules",
}


@asynccontextmanager
async def _session(stack: SurfaceStack) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "claude_conductor.cli.main", "mcp"],
        env=stack.env,
        cwd=str(stack.repo),  # Claude Code starts it in the project: repo "." is that one
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


async def _call(session: ClientSession, tool: str, **args: Any) -> Any:
    result = await session.call_tool(tool, args)
    assert not result.is_error, [getattr(c, "text", c) for c in result.content]
    if result.structured_content is not None:
        data = result.structured_content
        return data.get("result", data) if set(data) == {"result"} else data
    return json.loads(result.content[0].text)  # type: ignore[union-attr]


async def _error(session: ClientSession, tool: str, **args: Any) -> str:
    result = await session.call_tool(tool, args)
    assert result.is_error, result
    return "\n".join(getattr(c, "text", "") for c in result.content)


async def test_tools_submit_read_diff_cancel_and_errors(surface_stack: SurfaceStack) -> None:
    model = surface_stack.model
    done = model.add_script(
        "mcp-hello",
        [
            tool_use("Write", {"file_path": "mcp.txt", "content": "hello from mcp\n"}),
            text("Wrote mcp.txt."),
        ],
    )
    hang = model.add_script("mcp-hang", [stall(600)])
    async with _session(surface_stack) as session:
        # Every tool is listed with a JSON schema; the task fields carry their descriptions.
        listed = (await session.list_tools()).tools
        assert {t.name for t in listed} == TOOLS
        for tool in listed:
            assert tool.input_schema["type"] == "object" and tool.description
        submit = next(t for t in listed if t.name == "submit_task").input_schema
        assert "What the agent should do" in submit["properties"]["prompt"]["description"]
        assert "code_review" in json.dumps(submit["properties"]["kind"])
        show = next(t for t in listed if t.name == "show_task").input_schema
        assert show["required"] == ["task_id"]

        # Bad arguments: one clear tool error naming the field; the server keeps serving.
        assert await _error(session, "show_task") == (
            "show_task: missing required argument 'task_id'"
        )
        message = await _error(session, "submit_task", prompt="  ")
        assert "field 'prompt'" in message and "needs a prompt" in message
        message = await _error(session, "submit_task", prompt="x", priority=11)
        assert "field 'priority' = 11" in message and "from 1 (lowest) to 10" in message
        message = await _error(session, "submit_task", promt="x")
        assert "unknown argument 'promt'; did you mean 'prompt'?" in message
        message = await _error(session, "submit_task", prompt="x", repo="/no/such/repo")
        assert "/no/such/repo" in message
        assert "no task 'nope'" in await _error(session, "show_task", task_id="nope")

        # A task submitted through MCP succeeds; its result, logs and diff read back.
        task = await _call(
            session, "submit_task", prompt=f"write mcp.txt {done}", title="From MCP",
            wait_seconds=240,
        )  # fmt: skip
        assert task["status"] == "succeeded", task
        assert task["files_changed"] == ["mcp.txt"] and task["cost_usd"] > 0
        task_id = task["task_id"]
        assert git(surface_stack.repo, "show", f"{task['branch']}:mcp.txt") == "hello from mcp\n"
        shown = await _call(session, "show_task", task_id=task_id)
        assert (shown["state"], shown["branch"]) == ("Completed", task["branch"])
        diff = await _call(session, "task_diff", task_id=task_id)
        assert "+hello from mcp" in diff["diff"] and diff["files_changed"] == ["mcp.txt"]
        logs = await _call(session, "task_logs", task_id=task_id)
        assert logs["finished"] and logs["lines"] and logs["next_offset"] == len(logs["lines"])
        assert any("mcp.txt" in line for line in logs["lines"])
        more = await _call(session, "task_logs", task_id=task_id, offset=logs["next_offset"])
        assert more["lines"] == []
        rows = await _call(session, "list_tasks", limit=10)
        assert task_id in [r["task_id"] for r in rows]

        # Another one is cancelled while its agent runs: the agent process is gone.
        other = await _call(session, "submit_task", prompt=f"hang {hang}", title="Hang")
        pids = wait_for(lambda: claude_pids_for(other["task_id"]), 120, "the agent to start")
        cancelled = await _call(session, "cancel_task", task_id=other["task_id"])
        assert cancelled["state"] in ("Cancelling", "Cancelled")
        end = await _call(session, "show_task", task_id=other["task_id"], wait_seconds=120)
        assert end["state"] == "Cancelled", end
        wait_for(lambda: not any(processes.pid_alive(p) for p in pids), 30, "the agent to die")
        message = await _error(session, "cancel_task", task_id=other["task_id"])
        assert "already ended (Cancelled)" in message

        # Retry makes a new task of the same fields; cancel it to leave the stack idle.
        again = await _call(session, "retry_task", task_id=task_id)
        assert again["retry_of"] == task_id and again["task_id"] != task_id
        await _call(session, "cancel_task", task_id=again["task_id"])
        servers = _mcp_servers(surface_stack)
        assert len(servers) == 1
    # Closing the session ends the server process.
    wait_for(lambda: not any(processes.pid_alive(p) for p in servers), 30, "the server to exit")


def _mcp_servers(stack: SurfaceStack) -> list[int]:
    """`conductor mcp` processes started in the stack's repository (by these tests)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        cmd = proc.info["cmdline"] or []
        if cmd[-2:] == ["claude_conductor.cli.main", "mcp"] and proc.info["cwd"] == str(stack.repo):
            found.append(proc.info["pid"])
    return found


def test_claude_code_adds_the_server_as_documented_and_its_agent_submits_a_task(
    surface_stack: SurfaceStack, tmp_path: Path, claude_path: Path
) -> None:
    """`claude mcp add conductor -- conductor mcp` (the README's line), then a real Claude
    Code agent (its model scripted) calls `submit_task` and gets the finished task back."""
    model = surface_stack.model
    inner = model.add_script(
        "mcp-inner",
        [tool_use("Write", {"file_path": "inner.txt", "content": "from an agent\n"}), text("Ok.")],
    )
    outer = model.add_script(
        "mcp-outer",
        [
            # Claude Code defers MCP tools: a model loads their schema first, then calls them.
            tool_use("ToolSearch", {"query": "select:mcp__conductor__submit_task"}),
            tool_use(
                "mcp__conductor__submit_task",
                {"prompt": f"write inner.txt {inner}", "title": "Inner", "wait_seconds": 240},
            ),
            text("Conductor ran it."),
        ],
    )
    bin_dir = tmp_path / "bin"  # `conductor` on PATH, as after `pip install`
    bin_dir.mkdir()
    (bin_dir / "conductor").symlink_to(Path(sys.executable).parent / "conductor")
    env = {
        **surface_stack.env,
        "PATH": f"{bin_dir}{os.pathsep}{surface_stack.env.get('PATH', os.defpath)}",
        "CLAUDE_CONFIG_DIR": str(tmp_path / "claude"),
        "ANTHROPIC_BASE_URL": model.url,  # the outer agent's own model
        "ANTHROPIC_API_KEY": "sk-outer-agent-key-000000000000",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        # The scripted model answers at once; a real one takes longer than the server takes
        # to connect. Connect before the first request, so the test does not race it.
        "MCP_CONNECTION_NONBLOCKING": "false",
    }

    def claude(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(claude_path), *args], cwd=surface_stack.repo, env=env,
            capture_output=True, text=True, timeout=400,
        )  # fmt: skip

    added = claude("mcp", "add", "conductor", "--", "conductor", "mcp")
    assert added.returncode == 0, added.stderr
    listed = claude("mcp", "list")
    assert "conductor" in listed.stdout and "Connected" in listed.stdout, listed

    ran = claude(
        "-p", f"Have Conductor write inner.txt {outer}", "--output-format", "json",
        "--allowedTools", "mcp__conductor__submit_task", "--max-turns", "5",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["result"] == "Conductor ran it."
    answered = model.messages_requests("mcp-outer")[-1].body
    result = last_tool_result(answered)
    assert result is not None and not result[1], result
    task = json.loads(result[0])
    assert task["status"] == "succeeded" and task["title"] == "Inner"
    assert git(surface_stack.repo, "show", f"{task['branch']}:inner.txt") == "from an agent\n"
