"""``conductor mcp``: Conductor as a Model Context Protocol server over stdio, built on the
official ``mcp`` SDK (``MCPServer``), so other agents can submit and follow tasks::

    claude mcp add conductor -- conductor mcp

Every tool has a JSON schema (from its typed arguments, with the task fields' own
descriptions). A bad argument, a missing one, an unknown one, or a Conductor error comes back
as one clear tool error naming the field; nothing crashes the server.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field, ValidationError

from claude_conductor import __version__
from claude_conductor.errors import ConductorError
from claude_conductor.mcp_server import tools
from claude_conductor.models import TaskSpec
from claude_conductor.settings import ConductorSettings

__all__ = ["build_server", "serve"]

_INSTRUCTIONS = (
    "Claude Conductor runs Claude Code agents on git repositories, in parallel, on a Prefect "
    "server. submit_task starts one (it works on its own branch `conductor/<task_id>`); "
    "show_task with wait_seconds waits for its end; task_logs follows it; task_diff returns "
    "what it changed; cancel_task and retry_task manage it."
)

Kind = Literal["code_review", "refactor", "test_generation", "analysis", "generic", "command"]
Mode = Literal["default", "acceptEdits", "bypassPermissions", "plan"]
TaskId = Annotated[str, Field(description="The task's id (e.g. t-20260101-020000-ab12cd).")]
WaitSeconds = Annotated[
    float,
    Field(
        description="Wait up to this many seconds (at most 600) for the task to end first; "
        "0 answers at once."
    ),
]


def _about(name: str) -> str:
    return TaskSpec.model_fields[name].description or name


def _field(name: str) -> Any:
    return Field(description=_about(name))


class ConductorMCP(MCPServer[Any]):
    """``MCPServer`` whose argument errors read like the rest of Conductor's."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        known = {t.name: t for t in await self.list_tools()}
        tool = known.get(name)
        if tool is not None:
            allowed = set((tool.input_schema or {}).get("properties", {}))
            for key in arguments:
                if key not in allowed:
                    close = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.6)
                    hint = f"did you mean {close[0]!r}?" if close else "remove it"
                    raise ToolError(
                        f"{name}: unknown argument {key!r}; {hint} (arguments: "
                        + ", ".join(sorted(allowed))
                        + ")"
                    )
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ValidationError):
                raise ToolError(_describe(name, cause)) from None
            if isinstance(cause, ConductorError):
                text = str(cause).removeprefix(f"{name}: ")  # a task file error's "path: "
                raise ToolError(f"{name}: {text}") from None
            raise


def _describe(tool: str, exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        if err["type"] == "missing":
            problems.append(f"missing required argument {where!r}")
        else:
            shown = repr(err.get("input"))
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            problems.append(f"argument {where!r} = {shown}: {err['msg']}")
    return f"{tool}: " + "; ".join(problems)


def build_server(settings: ConductorSettings, *, cwd: Path | None = None) -> MCPServer[Any]:
    """The server and its tools; relative repositories are taken from ``cwd`` (default: the
    directory the server started in, which is the project of the agent that started it)."""
    base = (cwd or Path.cwd()).resolve()
    server = ConductorMCP(
        name="claude-conductor",
        version=__version__,
        instructions=_INSTRUCTIONS,
        log_level="WARNING",
    )

    @server.tool()
    async def submit_task(
        prompt: Annotated[str, _field("prompt")] = "",
        repo: Annotated[
            str,
            Field(
                description=_about("repo") + " A relative path is taken from the directory "
                "the server runs in."
            ),
        ] = ".",
        kind: Annotated[Kind, _field("kind")] = "generic",
        title: Annotated[str, _field("title")] = "",
        ref: Annotated[str | None, _field("ref")] = None,
        files: Annotated[list[str] | None, _field("files")] = None,
        verify: Annotated[str | None, _field("verify")] = None,
        command: Annotated[str | None, _field("command")] = None,
        model: Annotated[str | None, _field("model")] = None,
        timeout_seconds: Annotated[float | None, _field("timeout_seconds")] = None,
        max_turns: Annotated[int | None, _field("max_turns")] = None,
        max_budget_usd: Annotated[float | None, _field("max_budget_usd")] = None,
        priority: Annotated[int | None, _field("priority")] = None,
        retries: Annotated[int | None, _field("retries")] = None,
        tags: Annotated[list[str] | None, _field("tags")] = None,
        permission_mode: Annotated[Mode | None, _field("permission_mode")] = None,
        allowed_tools: Annotated[list[str] | None, _field("allowed_tools")] = None,
        disallowed_tools: Annotated[list[str] | None, _field("disallowed_tools")] = None,
        subtasks: Annotated[
            list[dict[str, Any]] | None,
            Field(description=_about("subtasks") + " Each takes the fields of this tool."),
        ] = None,
        wait_seconds: WaitSeconds = 0,
    ) -> dict[str, Any]:
        """Submit a task for a Claude Code agent (or a shell command) on a git repository.
        The fields and their checks are those of Conductor's task files. Returns the task's
        id and state (and its outcome when wait_seconds lets it finish)."""
        given = {
            "prompt": prompt,
            "repo": repo,
            "kind": kind,
            "title": title,
            "ref": ref,
            "files": files,
            "verify": verify,
            "command": command,
            "model": model,
            "timeout_seconds": timeout_seconds,
            "max_turns": max_turns,
            "max_budget_usd": max_budget_usd,
            "priority": priority,
            "retries": retries,
            "tags": tags,
            "permission_mode": permission_mode,
            "allowed_tools": allowed_tools,
            "disallowed_tools": disallowed_tools,
            "subtasks": subtasks,
        }
        fields = {k: v for k, v in given.items() if v is not None and v != ""}
        return await tools.submit(settings, fields, cwd=base, wait_seconds=wait_seconds)

    @server.tool()
    async def list_tasks(
        limit: Annotated[int, Field(description="How many, newest first (1-200).")] = 20,
    ) -> list[dict[str, Any]]:
        """The newest tasks with their state and, once ended, status, cost and branch."""
        return await tools.list_tasks(settings, limit=limit)

    @server.tool()
    async def show_task(task_id: TaskId, wait_seconds: WaitSeconds = 0) -> dict[str, Any]:
        """A task's state and, once it ended, its outcome: status, branch, files changed,
        cost, turns, the agent's summary and any error."""
        return await tools.show(settings, task_id, wait_seconds=wait_seconds)

    @server.tool()
    async def task_logs(
        task_id: TaskId,
        offset: Annotated[
            int, Field(description="Skip this many lines (the next_offset of a previous call).")
        ] = 0,
        limit: Annotated[int, Field(description="At most this many lines (1-1000).")] = 200,
        wait_seconds: Annotated[
            float,
            Field(description="Wait up to this many seconds (at most 600) for a new line."),
        ] = 0,
    ) -> dict[str, Any]:
        """A task's log lines (agent events included; secrets redacted). To follow a task,
        call again with next_offset until finished is true."""
        return await tools.logs(
            settings, task_id, offset=offset, limit=limit, wait_seconds=wait_seconds
        )

    @server.tool()
    async def task_diff(task_id: TaskId) -> dict[str, Any]:
        """The patch a finished task made on its branch (unified diff), with the files it
        changed and its base and head commits."""
        return await tools.diff(settings, task_id)

    @server.tool()
    async def cancel_task(task_id: TaskId) -> dict[str, Any]:
        """Cancel a queued or running task; its agent is stopped."""
        return await tools.cancel(settings, task_id)

    @server.tool()
    async def retry_task(task_id: TaskId) -> dict[str, Any]:
        """Run a finished task again as a new task (same fields, new id and branch)."""
        return await tools.retry(settings, task_id)

    @server.tool()
    async def list_schedules() -> list[dict[str, Any]]:
        """Tasks that run by themselves on a cron or an interval, with their next run."""
        return await tools.list_schedules(settings)

    return server


async def serve(settings: ConductorSettings) -> None:
    """Serve MCP on this process's stdin/stdout until the client closes it."""
    await build_server(settings).run_stdio_async()
