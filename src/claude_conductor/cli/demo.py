"""``conductor demo``: watch a real Claude Code agent make a real change to a tiny repository.

Without an API key it runs OFFLINE against Conductor's scripted local model (a stand-in that
plays a fixed script, not Claude): the agent, tools, git branch and result are all real.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import typer

from claude_conductor.cli import _common

__all__ = ["register"]

OFFLINE_BANNER = (
    "OFFLINE DEMO: no ANTHROPIC_API_KEY is set, so the agent talks to Conductor's scripted "
    "local model (a fixed script standing in for Claude). The claude CLI, its tools, the git "
    "branch and the result are real."
)


def has_api_credentials(env: dict[str, str] | None = None) -> bool:
    env = dict(os.environ) if env is None else env
    return bool(env.get("ANTHROPIC_API_KEY") or env.get("ANTHROPIC_AUTH_TOKEN"))


def demo(
    local: bool = typer.Option(False, "--local", help="Run in this process, without a server."),
    offline: bool = typer.Option(
        False, "--offline", help="Use the scripted local model even if an API key is set."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON document."),
) -> int:
    """Create a demo repository and have an agent add a greeting helper to it."""
    from claude_conductor.cli.run import render_result
    from claude_conductor.demo.project import demo_task, make_demo_repo

    settings = _common.settings()
    offline = offline or not has_api_credentials()
    repo = make_demo_repo(settings.home / "demo" / "project")
    from claude_conductor.agents.confinement import sandbox_tools_missing

    missing = sandbox_tools_missing() if settings.agent_sandbox else []
    spec = demo_task(repo, offline=offline, bash=not missing)
    if offline and not as_json:
        _common.err_console.print(f"[bold yellow]{OFFLINE_BANNER}[/]", highlight=False)
    if missing and not as_json:
        _common.err_console.print(
            f"{' and '.join(missing)} not installed: the demo's agent gets no shell and its "
            "change is not verified (both need the sandbox).\n"
            "For real work: apt-get install bubblewrap socat.",
            highlight=False,
        )
    if local:
        result = _run_local(spec, settings, offline=offline, quiet=as_json)
    else:
        from claude_conductor.cli import submit

        result = submit.demo_on_stack(spec, settings, offline=offline, as_json=as_json)
    if as_json:
        _common.print_json(result.model_dump(mode="json"))
        return 0 if result.ok else 1
    render_result(result)
    _common.console.print(
        f"\nSee the change:  git -C {repo} show --stat {result.branch}\n"
        f"Or the patch:    {result.patch_path or '-'}",
        highlight=False,
    )
    if not local:
        _common.console.print(
            "Follow tasks:     conductor tasks list   (and the Prefect UI above)\n"
            "Stop everything:  conductor down",
            highlight=False,
        )
    return 0 if result.ok else 1


def _run_local(spec: Any, settings: Any, *, offline: bool, quiet: bool) -> Any:
    from claude_conductor.cli.run import _run_local as run_here

    if not offline:
        return asyncio.run(run_here(spec, settings, quiet))
    from claude_conductor.demo.scripted_model import ScriptedModel

    with ScriptedModel() as server:
        saved = {k: os.environ.get(k) for k in ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY")}
        os.environ["ANTHROPIC_BASE_URL"] = server.url
        os.environ["ANTHROPIC_API_KEY"] = "offline-demo-key"
        try:
            return asyncio.run(run_here(spec, settings, quiet))
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
