"""Submitting a task to the agents and following it to its end, with a live status line."""

from __future__ import annotations

from typing import Any

from claude_conductor.cli import _common

__all__ = ["follow", "submit_and_follow"]


def _ui_url(settings: Any, run_id: Any) -> str:
    base = settings.server.ui
    if "://" not in base:  # a same-origin path is for the dashboard behind the proxy
        base = settings.server.url.rstrip("/").removesuffix("/api")
    return f"{base}/runs/flow-run/{run_id}"


async def follow(client: Any, run: Any, settings: Any, *, quiet: bool) -> Any:
    """Follow a run to its end; return its TaskResult (or a synthesized one when it has none)."""
    from claude_conductor.client.tasks import task_id_of, task_result, wait_for_run
    from claude_conductor.models import TaskResult, TaskStatus

    task_id = task_id_of(run)
    status = None if quiet else _common.err_console.status(f"{task_id}: submitted")

    def on_change(current: Any) -> None:
        if status is not None:
            status.update(f"{task_id}: {current.state.name if current.state else '?'}")

    if status is not None:
        status.start()
    try:
        final = await wait_for_run(client, run.id, on_change=on_change)
    finally:
        if status is not None:
            status.stop()
    result = await task_result(client, final)
    if result is not None:
        return result
    state = final.state
    cancelled = bool(state and state.is_cancelled())
    return TaskResult(
        task_id=task_id,
        status=TaskStatus.CANCELLED if cancelled else TaskStatus.FAILED,
        error=f"run ended {state.name if state else '?'}: "
        f"{(state.message if state else '') or 'no result was published'}",
    )


def check_repos(spec: Any) -> None:
    """Bad input before anything is submitted: every local repository (the task's and its
    subtasks') exists, is a git repository and has the ref. InputError (exit 2) otherwise."""
    from claude_conductor.workspaces.source import check_local_source

    for repo, ref in dict.fromkeys((t.repo, t.ref) for t in [spec, *spec.expanded_subtasks()]):
        check_local_source(repo, ref)  # each repository and ref once


async def _submit(spec: Any, settings: Any, *, wait: bool, quiet: bool) -> Any:
    from claude_conductor.client.tasks import api_client, submit_task

    check_repos(spec)
    async with api_client(settings) as client:
        run = await submit_task(client, spec)
        if not quiet:
            _common.err_console.print(
                f"submitted [bold]{spec.id}[/] ({spec.kind}, priority {spec.priority}) "
                f"-> {_ui_url(settings, run.id)}",
                highlight=False,
            )
        if not wait:
            return run
        return await follow(client, run, settings, quiet=quiet)


def submit_and_follow(spec: Any, settings: Any, *, wait: bool, as_json: bool) -> Any:
    """Submit; with ``wait`` return the TaskResult, else print the submission and return None."""
    outcome = _common.run_sync(_submit(spec, settings, wait=wait, quiet=as_json))
    if wait:
        return outcome
    if as_json:
        _common.print_json(
            {
                "task_id": spec.id,
                "flow_run_id": str(outcome.id),
                "url": _ui_url(settings, outcome.id),
            }
        )
    else:
        _common.console.print(f"follow it with: conductor tasks show {spec.id} --wait")
    return None


def _has_streamlit() -> bool:
    import importlib.util

    return importlib.util.find_spec("streamlit") is not None


def demo_on_stack(spec: Any, settings: Any, *, offline: bool, as_json: bool) -> Any:
    """Bring the standalone tier up (with the scripted model when offline) and run the demo."""
    from claude_conductor.tiers import standalone

    info = standalone.up(settings, agents=None, offline_model=offline)
    if not as_json:
        board = getattr(info, "dashboard_url", None)
        _common.err_console.print(
            f"Conductor is up: Prefect UI {info.ui_url}"
            + (f", dashboard {board}" if board else ""),
            highlight=False,
        )
        if not board and settings.dashboard.enabled and not _has_streamlit():
            _common.err_console.print(
                "The dashboard is not installed: pip install -e '.[dashboard]', then "
                "conductor dashboard",
                highlight=False,
            )
    return _common.run_sync(_submit(spec, settings, wait=True, quiet=as_json))
