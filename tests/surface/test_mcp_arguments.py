"""The MCP server's schemas and argument errors, in process through the SDK's own client (no
Prefect needed: every call here is refused before it would reach the API)."""

from __future__ import annotations

from pathlib import Path

from mcp import Client

from claude_conductor.mcp_server.server import build_server
from claude_conductor.settings import ConductorSettings, ServerSettings


def _server(tmp_path: Path) -> Client:
    settings = ConductorSettings(home=tmp_path, server=ServerSettings(port=9))  # nothing there
    return Client(build_server(settings, cwd=tmp_path))


async def _error(client: Client, tool: str, **args: object) -> str:
    result = await client.call_tool(tool, args)
    assert result.is_error, result
    return "\n".join(getattr(c, "text", "") for c in result.content)


async def test_schemas_describe_every_argument(tmp_path: Path) -> None:
    async with _server(tmp_path) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    submit = tools["submit_task"].input_schema
    assert submit.get("required", []) == []  # prompt or command, checked like a task file
    for name, prop in submit["properties"].items():
        assert prop.get("description"), name
    assert tools["task_logs"].input_schema["required"] == ["task_id"]
    assert tools["task_diff"].description and "patch" in tools["task_diff"].description


async def test_bad_arguments_are_one_clear_tool_error(tmp_path: Path) -> None:
    async with _server(tmp_path) as client:
        assert await _error(client, "task_diff") == "task_diff: missing required argument 'task_id'"
        assert "argument 'limit' = 'many'" in await _error(client, "list_tasks", limit="many")
        assert "unknown argument 'wait'" in await _error(client, "show_task", task_id="t", wait=5)
        message = await _error(client, "submit_task", prompt="go", kind="refactr")
        assert message.startswith("submit_task: argument 'kind' = 'refactr'")
        message = await _error(client, "submit_task", kind="command")
        assert message == (
            "submit_task: field 'command' kind 'command' needs a command to run, "
            "e.g. command: 'pytest -q'"
        )
        message = await _error(client, "submit_task", prompt="go", files=["../etc/passwd"])
        assert "outside the repository" in message
        message = await _error(client, "submit_task", prompt="go", wait_seconds=5000)
        assert "field 'wait_seconds' = 5000" in message
        # The repository is checked before anything is submitted (tmp_path is no git repo).
        assert "git" in await _error(client, "submit_task", prompt="go")
        # A Conductor error from the API side is a tool error too, not a crash.
        message = await _error(client, "list_tasks")
        assert message.startswith("list_tasks: the Conductor server is not running")
