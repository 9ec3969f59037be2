"""``conductor mcp``: serve the Model Context Protocol on stdio (for other agents)::

claude mcp add conductor -- conductor mcp
"""

from __future__ import annotations

import typer

from claude_conductor.cli import _common

__all__ = ["register"]


def mcp() -> None:
    """Serve Conductor's tools (submit, list, show, logs, diff, cancel, retry) over MCP on
    stdin/stdout. Register it with: claude mcp add conductor -- conductor mcp"""
    import anyio

    from claude_conductor.mcp_server.server import serve

    settings = _common.settings()
    anyio.run(serve, settings)


def register(app: typer.Typer) -> None:
    app.command("mcp")(mcp)
