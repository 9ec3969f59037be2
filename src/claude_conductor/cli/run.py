"""``conductor run``: run a task from a file or from flags, here (``--local``) or on the agents."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import typer

from claude_conductor.cli import _common
from claude_conductor.errors import InputError

__all__ = ["build_spec", "register", "render_result"]


def build_spec(task_file: Path | None, flags: dict[str, Any]) -> Any:
    """A TaskSpec from a task file and/or flags (flags win). Raises TaskFileError/InputError."""
    from claude_conductor.taskfile import load_task_file, parse_task

    given = {k: v for k, v in flags.items() if v is not None and v != []}
    if task_file is not None:
        spec = load_task_file(task_file)
        if not given:
            return spec
        data = spec.model_dump(exclude_unset=True)
        if "repo" in given:
            given["repo"] = _abs_repo(given["repo"])
        return parse_task({**data, **given}, source=str(task_file))
    if not given.get("prompt") and not given.get("command"):
        raise InputError(
            "nothing to run: give a task file (conductor run task.yaml) or --prompt TEXT "
            "(or --kind command --command CMD)",
            field="prompt",
        )
    if given.get("command") and "kind" not in given:
        given["kind"] = "command"
    given["repo"] = _abs_repo(given.get("repo", "."))
    return parse_task(given, source="command line")


def _abs_repo(repo: str) -> str:
    from claude_conductor.git_urls import is_git_url

    if is_git_url(repo):
        return repo
    return str(Path(repo).expanduser().resolve())


def render_result(result: Any) -> None:
    """A readable summary of a TaskResult."""
    from rich.panel import Panel
    from rich.table import Table

    colour = {"succeeded": "green", "needs_attention": "yellow"}.get(result.status.value, "red")
    table = Table.grid(padding=(0, 2))
    table.add_row("status", f"[bold {colour}]{result.status.value}[/]")
    if result.error:
        table.add_row("error", result.error)
    table.add_row("branch", f"{result.branch or '-'}  ({(result.head_commit or '')[:10]})")
    files = ", ".join(result.files_changed) or "none"
    stats = result.diff_stats
    table.add_row("files", f"{files}  (+{stats.insertions} -{stats.deletions})")
    if result.kind != "command":
        table.add_row(
            "agent",
            f"{result.num_turns} turns, ${result.cost_usd:.4f}, "
            f"{result.input_tokens} in / {result.output_tokens} out tokens",
        )
    if result.permission_denials:
        names = ", ".join(str(d.get("tool_name", "?")) for d in result.permission_denials)
        table.add_row("denied", names)
    if result.verify is not None:
        table.add_row("verify", f"{result.verify.command!r} -> exit {result.verify.exit_code}")
    table.add_row("time", f"{result.duration_seconds:.1f}s")
    if result.workspace_path:
        table.add_row("workspace", f"kept for inspection: {result.workspace_path}")
    _common.console.print(Panel(table, title=f"{result.task_id}  {result.title}", expand=False))
    if result.summary:
        _common.console.print(result.summary.strip(), highlight=False, markup=False)


async def _run_local(spec: Any, settings: Any, quiet: bool) -> Any:
    from rich.text import Text

    from claude_conductor.flows.steps import execute_task
    from claude_conductor.system.hardening import make_undumpable

    # This process is the engine here: keep its environment and memory out of the agent's
    # reach through /proc (the agent runs as the same user).
    make_undumpable()

    def on_event(event: Any) -> None:
        if not quiet:
            line = Text("  · ", style="dim")
            line.append(event.describe())
            _common.err_console.print(line, highlight=False, overflow="ellipsis", no_wrap=True)

    task = asyncio.ensure_future(execute_task(spec, settings, on_event=on_event))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run(
    task_file: Path | None = typer.Argument(None, help="A task YAML file.", show_default=False),
    prompt: str | None = typer.Option(None, "--prompt", "-p", help="What the agent should do."),
    repo: str | None = typer.Option(None, "--repo", "-r", help="Repository path or git URL."),
    kind: str | None = typer.Option(None, "--kind", "-k", help="Task kind (default generic)."),
    ref: str | None = typer.Option(None, "--ref", help="Branch, tag or commit to start from."),
    title: str | None = typer.Option(None, "--title", help="A short title."),
    command: str | None = typer.Option(None, "--command", help="Shell command (kind command)."),
    verify: str | None = typer.Option(None, "--verify", help="Command to check the work."),
    model: str | None = typer.Option(None, "--model", help="Model alias or name."),
    timeout_seconds: float | None = typer.Option(None, "--timeout", help="Wall-clock seconds."),
    max_turns: int | None = typer.Option(None, "--max-turns", help="Most agent turns."),
    max_budget_usd: float | None = typer.Option(None, "--max-budget", help="Most USD to spend."),
    priority: int | None = typer.Option(None, "--priority", help="1 (low) to 10 (urgent)."),
    local: bool = typer.Option(False, "--local", help="Run here, in this process (no server)."),
    wait: bool = typer.Option(False, "--wait", "-w", help="Follow the run to its end."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as one JSON document."),
) -> int:
    """Run one task: from a task file, or from --prompt/--command and flags."""
    settings = _common.settings()
    spec = build_spec(
        task_file,
        {
            "prompt": prompt,
            "repo": repo,
            "kind": kind,
            "ref": ref,
            "title": title,
            "command": command,
            "verify": verify,
            "model": model,
            "timeout_seconds": timeout_seconds,
            "max_turns": max_turns,
            "max_budget_usd": max_budget_usd,
            "priority": priority,
        },
    )
    if local:
        if not as_json:
            _common.err_console.print(f"running {spec.id} ({spec.kind}) locally ...")
        result = asyncio.run(_run_local(spec, settings, quiet=as_json))
    else:
        from claude_conductor.cli import submit

        result = submit.submit_and_follow(spec, settings, wait=wait or as_json, as_json=as_json)
        if result is None:
            return 0
    if as_json:
        _common.print_json(result.model_dump(mode="json"))
    else:
        render_result(result)
    return 0 if result.ok else 1


def register(app: typer.Typer) -> None:
    app.command("run")(run)
