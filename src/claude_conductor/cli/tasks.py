"""``conductor tasks list|show|logs|diff|cancel|retry``: the tasks on the server."""

from __future__ import annotations

import sys
from typing import Any

import typer

from claude_conductor.cli import _common

__all__ = ["register", "run_row"]

tasks_app = typer.Typer(help="List, inspect, cancel and retry tasks.", no_args_is_help=True)


def run_row(run: Any, result: Any | None) -> dict[str, Any]:
    """One task as plain data: what `tasks list --json` prints."""
    from claude_conductor.client.tasks import task_id_of

    spec = (run.parameters or {}).get("spec") or {}
    state = run.state
    return {
        "task_id": task_id_of(run),
        "flow_run_id": str(run.id),
        "state": state.name if state else None,
        "status": result.status.value if result else None,
        "kind": spec.get("kind"),
        "title": (result.title if result else "") or spec.get("title") or "",
        "repo": spec.get("repo"),
        "priority": spec.get("priority"),
        "started": run.start_time.isoformat() if run.start_time else None,
        "duration_seconds": result.duration_seconds
        if result
        else run.total_run_time.total_seconds(),
        "cost_usd": result.cost_usd if result else None,
        "turns": result.num_turns if result else None,
        "branch": result.branch if result else None,
    }


async def _list(settings: Any, limit: int) -> list[dict[str, Any]]:
    from claude_conductor.client.tasks import api_client, list_runs, task_id_of
    from claude_conductor.flows.results import read_results

    async with api_client(settings) as client:
        runs = await list_runs(client, limit=limit)
        results = await read_results(client, [task_id_of(r) for r in runs])
    return [run_row(r, results.get(task_id_of(r))) for r in runs]


@tasks_app.command("list")
def list_tasks(
    limit: int = typer.Option(50, "--limit", "-n", help="How many, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """The newest tasks with their state, cost and branch."""
    from rich.table import Table

    rows = _common.run_sync(_list(_common.settings(), limit))
    if as_json:
        _common.print_json(rows)
        return
    table = Table("task", "state", "kind", "title", "cost", "turns", "branch")
    for row in rows:
        cost = f"${row['cost_usd']:.4f}" if row["cost_usd"] is not None else "-"
        table.add_row(
            row["task_id"],
            row["state"] or "-",
            row["kind"] or "-",
            (row["title"] or "")[:40],
            cost,
            str(row["turns"] if row["turns"] is not None else "-"),
            row["branch"] or "-",
        )
    _common.console.print(table)


async def _show(settings: Any, task_id: str, wait: bool, quiet: bool) -> tuple[Any, Any]:
    from claude_conductor.cli.submit import follow
    from claude_conductor.client.tasks import api_client, find_run, task_result

    async with api_client(settings) as client:
        run = await find_run(client, task_id)
        if wait:
            result = await follow(client, run, settings, quiet=quiet)
            # The run as it ended, not as it was when the wait began (state beside status).
            return await client.read_flow_run(run.id), result
        return run, await task_result(client, run)


@tasks_app.command("show")
def show(
    task_id: str = typer.Argument(..., help="Task id (or flow run id)."),
    wait: bool = typer.Option(False, "--wait", "-w", help="Follow it to its end first."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> int:
    """A task's state and, once it ended, its result."""
    from claude_conductor.cli.run import render_result

    run, result = _common.run_sync(_show(_common.settings(), task_id, wait, as_json))
    if as_json:
        doc = run_row(run, result)
        doc["result"] = result.model_dump(mode="json") if result else None
        _common.print_json(doc)
    elif result is not None:
        render_result(result)
    else:
        state = run.state.name if run.state else "?"
        _common.console.print(f"{run_row(run, None)['task_id']}: {state} (no result yet)")
    if result is None:
        return 0
    return 0 if result.ok else 1


async def _logs(settings: Any, task_id: str) -> list[Any]:
    from claude_conductor.client.tasks import api_client, find_run, read_task_logs

    async with api_client(settings) as client:
        run = await find_run(client, task_id)
        return await read_task_logs(client, run)


@tasks_app.command("logs")
def logs(
    task_id: str = typer.Argument(..., help="Task id (or flow run id)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """The task run's logs, agent events included (secrets redacted)."""
    entries = _common.run_sync(_logs(_common.settings(), task_id))
    if as_json:
        _common.print_json(
            [
                {"time": e.timestamp.isoformat(), "level": e.level, "message": e.message}
                for e in entries
            ]
        )
        return
    for e in entries:
        _common.console.print(f"{e.timestamp:%H:%M:%S} {e.message}", highlight=False, markup=False)


async def _diff(settings: Any, task_id: str) -> tuple[Any, str | None]:
    from claude_conductor.client.diffs import read_task_diff
    from claude_conductor.client.tasks import api_client, find_run, task_result

    async with api_client(settings) as client:
        run = await find_run(client, task_id)
        result = await task_result(client, run)
        return run, (await read_task_diff(client, result) if result is not None else None)


@tasks_app.command("diff")
def diff(task_id: str = typer.Argument(..., help="Task id (or flow run id).")) -> int:
    """The patch a finished task made on its branch (empty when it changed nothing)."""
    run, text = _common.run_sync(_diff(_common.settings(), task_id))
    if text is None:
        state = run.state.name if run.state else "?"
        _common.err_console.print(
            f"{run_row(run, None)['task_id']}: {state}, no result yet; wait for it with "
            "`conductor tasks show ID --wait`"
        )
        return 1
    sys.stdout.write(text)
    return 0


@tasks_app.command("cancel")
def cancel(task_id: str = typer.Argument(..., help="Task id (or flow run id).")) -> None:
    """Cancel a queued or running task; its agent is stopped."""
    from claude_conductor.client.tasks import api_client, cancel_task

    async def go() -> Any:
        async with api_client(_common.settings()) as client:
            return await cancel_task(client, task_id)

    run = _common.run_sync(go())
    _common.console.print(f"{run.name}: {run.state.name if run.state else '?'}")


@tasks_app.command("retry")
def retry(
    task_id: str = typer.Argument(..., help="Task id (or flow run id) of a finished task."),
    wait: bool = typer.Option(False, "--wait", "-w", help="Follow the new run to its end."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> int:
    """Run a finished task again as a new task (same spec, new id and branch)."""
    from claude_conductor.cli.run import render_result
    from claude_conductor.cli.submit import follow
    from claude_conductor.client.tasks import api_client, retry_task

    async def go() -> tuple[Any, Any, Any]:
        settings = _common.settings()
        async with api_client(settings) as client:
            spec, run = await retry_task(client, task_id)
            result = await follow(client, run, settings, quiet=as_json) if wait else None
            return spec, run, result

    spec, run, result = _common.run_sync(go())
    if as_json:
        _common.print_json(
            {
                "task_id": spec.id,
                "flow_run_id": str(run.id),
                "result": result.model_dump(mode="json") if result else None,
            }
        )
    elif result is not None:
        render_result(result)
    else:
        _common.console.print(f"retrying {task_id} as {spec.id}")
    return 0 if result is None or result.ok else 1


def register(app: typer.Typer) -> None:
    app.add_typer(tasks_app, name="tasks")
