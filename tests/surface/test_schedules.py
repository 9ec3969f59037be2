"""Schedules on Prefect's own scheduler: `conductor schedule add` fires on the real server's
scheduler service, its run succeeds and is listed; pause stops new runs; remove deletes it.
Bad options are one line naming the option, exit 2, nothing created.

How it fires within seconds with stock server settings: Prefect's "recent deployments"
scheduler loop (``PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS``, 5 s by
default) schedules a deployment's runs right after it is created or updated; the main loop
(``..._SCHEDULER_LOOP_SECONDS``, 60 s) tops them up later.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import StateType
from surface_stack import SurfaceStack, wait_for

from claude_conductor.client.connection import conductor_client, run_sync
from claude_conductor.client.schedules import (
    Timing,
    parse_timing,
    schedule_name,
    scheduled_parameters,
)
from claude_conductor.demo.script_steps import text, tool_use
from claude_conductor.errors import InputError
from claude_conductor.models import TaskSpec
from helpers import git

INTERVAL_SECONDS = 15


# ------------------------------------------------------------------ pure checks


def test_timing_options_are_checked_and_named() -> None:
    assert parse_timing(cron=" 0  2 * * *", interval_seconds=None, timezone="Europe/Paris") == (
        Timing(cron="0 2 * * *", timezone="Europe/Paris")
    )
    assert parse_timing(cron=None, interval_seconds=90, timezone=None).describe() == "every 90 s"
    assert Timing(interval_seconds=3600).describe() == "every 1 h"
    cases = [
        ({"cron": "61 * * * *"}, "--cron '61 * * * *' is not a valid cron expression"),
        ({"cron": "0 2 * * * *"}, "--cron '0 2 * * * *' has 6 fields"),
        ({"cron": "0 2 * * *", "timezone": "Europe/Pariss"}, "did you mean 'Europe/Paris'?"),
        ({"cron": "0 2 * * *", "timezone": "Mars/Olympus"}, "--timezone 'Mars/Olympus' is not"),
        ({"interval_seconds": 0.5}, "--interval 0.5 must be a number of seconds of at least 1"),
        ({"interval_seconds": float("nan")}, "--interval nan must be"),
        ({}, "give exactly one of --cron"),
        ({"cron": "0 2 * * *", "interval_seconds": 60}, "give exactly one of --cron"),
    ]
    for given, message in cases:
        args: dict[str, Any] = {"cron": None, "interval_seconds": None, "timezone": None, **given}
        with pytest.raises(InputError) as caught:
            parse_timing(**args)
        assert message in str(caught.value), str(caught.value)
        assert caught.value.field in ("--cron", "--interval", "--timezone")


def test_names_and_ids() -> None:
    assert schedule_name(None, "Weekly Review!") == "weekly-review"
    assert schedule_name("weekly", "x") == "weekly"
    for bad, message in [("Bad Name", "not a usable schedule name"), ("run", "Conductor's own")]:
        with pytest.raises(InputError, match=message):
            schedule_name(bad, "x")
    spec = TaskSpec.model_validate({"prompt": "p", "repo": "/r"})
    params = scheduled_parameters(spec)["spec"]
    assert "id" not in params and params["prompt"] == "p"
    with pytest.raises(InputError, match="field 'id' = 'fixed-id': a scheduled task gets a fresh"):
        scheduled_parameters(TaskSpec.model_validate({"id": "fixed-id", "prompt": "p"}))
    fan = TaskSpec.model_validate({"prompt": "p", "subtasks": [{"id": "s-one", "prompt": "q"}]})
    with pytest.raises(InputError, match=r"field 'subtasks\.0\.id'"):
        scheduled_parameters(fan)
    fan = TaskSpec.model_validate({"repo": "/r", "subtasks": [{"prompt": "q"}]})
    fanned = scheduled_parameters(fan)["spec"]
    assert fanned["subtasks"] == [{"prompt": "q"}]
    sub = TaskSpec.model_validate(fanned).expanded_subtasks()[0]
    assert sub.id.endswith("-s1") and sub.repo == "/r"  # a fresh id per run; inherits repo
    assert params["kind"] == "generic" and params["timeout_seconds"] == 900


# ------------------------------------------------------------------ on the real stack


def _names(stack: SurfaceStack) -> set[str]:
    return {s["name"] for s in stack.cli_json("schedule", "list")}


def _runs_of(stack: SurfaceStack, deployment_id: str) -> dict[str, str]:
    async def read() -> dict[str, str]:
        async with conductor_client(stack.settings) as client:
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id])
                ),
                limit=200,
            )
        return {str(r.id): r.state.name if r.state else "?" for r in runs}

    result: dict[str, str] = run_sync(read())
    return result


def _runs_tagged(stack: SurfaceStack, tag: str, state: StateType) -> list[str]:
    async def read() -> list[str]:
        async with conductor_client(stack.settings) as client:
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    tags=FlowRunFilterTags(all_=[tag]),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[state])),
                ),
                limit=200,
            )
        return [str(r.id) for r in runs]

    result: list[str] = run_sync(read())
    return result


@pytest.mark.integration
def test_bad_options_name_the_option_and_create_nothing(
    surface_stack: SurfaceStack, tmp_path: Path
) -> None:
    task = tmp_path / "task.yaml"
    task.write_text(yaml.safe_dump({"prompt": "review", "repo": str(surface_stack.repo)}))
    before = _names(surface_stack)
    for args, message in [
        (["--cron", "0 25 * * *"], "error: --cron '0 25 * * *' is not a valid cron expression"),
        (["--cron", "0 2 * * *", "--timezone", "Europe/Pariss"], "error: --timezone"),
        (["--interval", "0"], "error: --interval 0 must be"),
    ]:
        out = surface_stack.cli("schedule", "add", str(task), *args)
        assert out.returncode == 2, out
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(message), out.stderr
    # The task file is checked as `conductor run` checks it: same line, exit 2.
    bad = tmp_path / "bad.yaml"
    bad.write_text("prompt: review\nrepo: /no/such/repo\npriority: 11\n")
    out = surface_stack.cli("schedule", "add", str(bad), "--cron", "0 2 * * *")
    run = surface_stack.cli("run", str(bad))
    assert out.returncode == run.returncode == 2
    assert out.stderr == run.stderr and "priority" in out.stderr
    assert _names(surface_stack) == before
    # The nightly review example stays off until its repository is set.
    out = surface_stack.cli("schedule", "resume", "nightly-review")
    assert out.returncode == 2 and "/path/to/your/repository" in out.stderr, out.stderr
    nightly = {s["name"]: s for s in surface_stack.cli_json("schedule", "list")}["nightly-review"]
    assert nightly["active"] is False


@pytest.mark.integration
def test_schedule_fires_on_prefects_scheduler_then_pause_and_remove(
    surface_stack: SurfaceStack, tmp_path: Path
) -> None:
    marker = surface_stack.model.add_script(
        "tick", [tool_use("Write", {"file_path": "tick.txt", "content": "tick\n"}), text("Tick.")]
    )
    task = tmp_path / "tick.yaml"
    task.write_text(
        yaml.safe_dump(
            {
                "title": "Scheduled tick",
                "prompt": f"write tick.txt {marker}",
                "repo": str(surface_stack.repo),
                "timeout_seconds": 120,
            }
        )
    )
    out = surface_stack.cli(
        "schedule", "add", str(task), "--interval", str(INTERVAL_SECONDS), "--name", "tick",
        "--json",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert (info["name"], info["active"], info["deployment"]) == (
        "tick",
        True,
        "conductor-task/tick",
    )
    listed = {s["name"]: s for s in surface_stack.cli_json("schedule", "list")}
    assert listed["tick"]["timing"] == f"every {INTERVAL_SECONDS} s"
    assert listed["nightly-review"]["active"] is False  # the example stays off
    # A second schedule of the same name is refused, nothing changes.
    again = surface_stack.cli("schedule", "add", str(task), "--interval", "60", "--name", "tick")
    assert again.returncode == 2 and "already exists" in again.stderr

    # The scheduler fires it; the run succeeds on its own branch and `tasks list` shows it.
    done = wait_for(
        lambda: _runs_tagged(surface_stack, "schedule:tick", StateType.COMPLETED),
        300,
        "a scheduled run to complete",
    )
    # Prefect keeps an hour of a 15 s schedule's runs ahead (at most 100), newest first.
    rows = surface_stack.cli_json("tasks", "list", "--limit", "200")
    mine = [r for r in rows if r["flow_run_id"] == done[0]]
    assert mine, (done, [(r["flow_run_id"], r["state"], r["title"]) for r in rows])
    row = mine[0]
    assert (row["state"], row["title"]) == ("Completed", "Scheduled tick")
    assert row["kind"] == "generic" and row["repo"] == str(surface_stack.repo)
    branches = git(
        surface_stack.repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/conductor/"
    ).split()
    assert any("tick.txt" in git(surface_stack.repo, "ls-tree", "--name-only", b) for b in branches)

    # Pause: no run is created or started any more.
    out = surface_stack.cli("schedule", "pause", "tick")
    assert out.returncode == 0 and "paused 'tick'" in out.stdout, out.stderr
    state = {s["name"]: s for s in surface_stack.cli_json("schedule", "list")}["tick"]
    assert state["active"] is False and state["next_run"] is None
    deployment_id = info["deployment_id"]
    at_pause = _runs_of(surface_stack, deployment_id)
    time.sleep(INTERVAL_SECONDS + 10)  # past its next slot and two recent-scheduler loops
    after = _runs_of(surface_stack, deployment_id)
    assert set(after) == set(at_pause), "a paused schedule created a run"
    assert "Scheduled" not in after.values() and "Late" not in after.values()

    # Resume and remove: it is gone from the list and from Prefect.
    assert surface_stack.cli("schedule", "resume", "tick").returncode == 0
    assert {s["name"]: s for s in surface_stack.cli_json("schedule", "list")}["tick"]["active"]
    out = surface_stack.cli("schedule", "remove", "tick")
    assert out.returncode == 0 and "removed 'tick'" in out.stdout, out.stderr
    assert "tick" not in _names(surface_stack)
    gone = surface_stack.cli("schedule", "pause", "tick")
    assert gone.returncode == 2 and "no schedule 'tick'" in gone.stderr
    waiting = _runs_tagged(surface_stack, "schedule:tick", StateType.SCHEDULED)
    assert waiting == [], "a removed schedule left runs waiting to start"
