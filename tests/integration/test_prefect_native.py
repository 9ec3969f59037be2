"""Conductor as a Prefect plugin, against a real standalone stack with the real `claude` and the
scripted model: the README's own flow (agents inside a user's flow, in parallel), runs started
by Prefect's own clients (`prefect deployment run`, `run_deployment`) as first-class tasks in the
CLI and the dashboard, the typed `spec` parameter, and `submit_agent_task`'s handle.

One stack serves the module (agents=2).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest

from claude_conductor.agents.argv import find_claude
from claude_conductor.client.connection import conductor_client, run_sync
from claude_conductor.demo.script_steps import (
    Request,
    Step,
    request_cwd,
    request_text,
    stall,
    text,
    tool_use,
)
from claude_conductor.demo.scripted_model import ScriptedModel
from claude_conductor.models import TaskResult
from claude_conductor.settings import ConductorSettings
from claude_conductor.system import processes
from claude_conductor.tiers import standalone
from claude_conductor.tiers.standalone.launch import local_api_url
from helpers import claude_pids_for, git, make_repo
from stack_fixtures import free_port, make_settings

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
API_KEY = "sk-native-test-key-0123456789"
PARALLEL_WAIT_SECONDS = 60


class TwoAtOnce:
    """The scripted model's default script for the README flow. A review answers at once;
    an agent asked for tests waits (up to a minute) until a second one, in another worktree,
    has asked too, then writes its test file: run one after the other, the first would wait
    the whole minute and their run times would not overlap."""

    def __init__(self) -> None:
        self._cwds: set[str] = set()
        self._both = threading.Event()
        self._lock = threading.Lock()

    def first(self, request: Request) -> Step:
        prompt = request_text(request, first_user_only=True)
        match = re.search(r"Write pytest tests for (\S+)", prompt)
        if match is None:
            return text("Reviewed the last commits: no blocking issues.")
        with self._lock:
            self._cwds.add(request_cwd(request) or "?")
            if len(self._cwds) >= 2:
                self._both.set()
        self._both.wait(PARALLEL_WAIT_SECONDS)
        stem = Path(match.group(1)).stem
        return tool_use(
            "Write",
            {"file_path": f"tests/test_{stem}.py", "content": f"def test_{stem}():\n    pass\n"},
        )

    def steps(self) -> list[Any]:
        return [self.first, text("Wrote the tests.")]


@dataclass
class NativeStack:
    settings: ConductorSettings
    model: ScriptedModel
    env: dict[str, str]
    repo: Path
    api_url: str

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "claude_conductor.cli.main", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def listed(self) -> dict[str, dict[str, Any]]:
        out = self.cli("tasks", "list", "--json", "--limit", "100")
        assert out.returncode == 0, out.stderr
        return {row["task_id"]: row for row in json.loads(out.stdout)}

    def show(self, task_id: str) -> dict[str, Any]:
        out = self.cli("tasks", "show", task_id, "--json")
        assert out.returncode in (0, 1), out.stderr
        doc: dict[str, Any] = json.loads(out.stdout)
        return doc


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory, agent_home: Path) -> Iterator[NativeStack]:
    try:
        find_claude(ConductorSettings())
    except Exception as exc:  # pragma: no cover - only without the dev install
        pytest.skip(f"no claude binary: {exc}")
    root = tmp_path_factory.mktemp("native-stack")
    repo = make_repo(root / "project")
    (repo / "app").mkdir()
    for name in ("models", "views"):
        (repo / "app" / f"{name}.py").write_text(f"def {name}():\n    return 1\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "app")
    settings = make_settings(root / "home", free_port(), agents=2)
    with ScriptedModel(default_script="two-at-once") as model:
        model.add_script("two-at-once", TwoAtOnce().steps())
        clean = {
            k: v for k, v in os.environ.items() if not k.startswith(("CONDUCTOR_", "PREFECT_"))
        }
        api_url = local_api_url(settings)
        env = {
            **clean,
            "ANTHROPIC_BASE_URL": model.url,
            "ANTHROPIC_API_KEY": API_KEY,
            "CLAUDE_CODE_MAX_RETRIES": "0",
            "HOME": str(agent_home),
            "CONDUCTOR_HOME": str(settings.home),
            "CONDUCTOR_SERVER__PORT": str(settings.server.port),
            "CONDUCTOR_WORKER__QUERY_SECONDS": "0.5",
            "CONDUCTOR_DASHBOARD__ENABLED": "false",
            "CONDUCTOR_AGENT__RESULT_GRACE_SECONDS": "1",
            "CONDUCTOR_AGENT__KILL_GRACE_SECONDS": "1",
            "PREFECT_HOME": str(root / "prefect-home"),
        }
        try:
            standalone.up(settings, base_env=env, timeout_seconds=180)
            # Prefect's own clients (the CLI, a user's flow) find the API the usual way.
            yield NativeStack(settings, model, {**env, "PREFECT_API_URL": api_url}, repo, api_url)
        finally:
            standalone.down(settings, grace_seconds=5)


def _readme_example() -> str:
    """The first Python block of the README's "Use it from your own Prefect flows"."""
    section = README.read_text(encoding="utf-8").split("## Use it from your own Prefect flows")[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


async def _subflows_of(settings: ConductorSettings, flow_name: str) -> tuple[Any, list[Any]]:
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterParentFlowRunId,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    async with conductor_client(settings) as client:
        (parent,) = await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=1,
        )
        subs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent.id])
            )
        )
        steps = {}
        for sub in subs:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[sub.id]))
            )
            steps[sub.id] = sorted(r.name.rsplit("-", 1)[0] for r in runs)
        return parent, [(sub, steps[sub.id]) for sub in subs]


def test_the_readme_flow_runs_agents_inside_a_users_flow_in_parallel(
    native: NativeStack, tmp_path: Path
) -> None:
    script = tmp_path / "release_prep.py"
    script.write_text(_readme_example(), encoding="utf-8")
    # The user's own process, in their repository, talking to their Prefect server.
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=native.repo,
        env=native.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    printed = [line.split() for line in done.stdout.splitlines() if line.startswith("t-")]
    assert len(printed) == 3, done.stdout
    review_id, tests_ids = printed[0][0], [p[0] for p in printed[1:]]
    assert printed[0][1] == "succeeded"
    assert [p[1] for p in printed[1:]] == ["succeeded", "succeeded"]

    # Prefect's API shows them as subflows of the user's flow, each with its steps (a verify
    # step only runs when the task has a verify command; these have none).
    parent, subs = run_sync(_subflows_of(native.settings, "release-prep"))
    assert parent.state is not None and parent.state.is_completed()
    by_id = {sub.name.split(":")[0]: (sub, steps) for sub, steps in subs}
    assert set(by_id) == {review_id, *tests_ids}
    for task_id, (sub, steps) in by_id.items():
        assert sub.state is not None and sub.state.is_completed(), sub.state
        assert sub.name.startswith(f"{task_id}: ")
        assert {"conductor", f"task:{task_id}"} <= set(sub.tags)
        assert steps == ["collect-result", "prepare-workspace", "run-agent"]

    # Each on its own branch, with its own test file; the two test agents overlapped.
    results = {t: TaskResult.model_validate(native.show(t)["result"]) for t in by_id}
    branches = {r.branch for r in results.values()}
    assert len(branches) == 3
    written = sorted(results[t].files_changed[0] for t in tests_ids)
    assert written == ["tests/test_models.py", "tests/test_views.py"]
    for task_id in tests_ids:
        path = results[task_id].files_changed[0]
        assert "def test_" in git(native.repo, "show", f"{results[task_id].branch}:{path}")
    spans = [(results[t].started_at, results[t].finished_at) for t in tests_ids]
    assert all(s is not None and e is not None for s, e in spans)
    assert max(s for s, _ in spans) < min(e for _, e in spans), f"not in parallel: {spans}"  # type: ignore[type-var]
    assert all(r.duration_seconds < PARALLEL_WAIT_SECONDS for r in results.values())

    # First-class tasks in `conductor tasks list`, with cost, turns and branch.
    listed = native.listed()
    for task_id, result in results.items():
        row = listed[task_id]
        assert row["status"] == "succeeded" and row["cost_usd"] == result.cost_usd > 0
        assert row["branch"] == f"conductor/{task_id}" and row["turns"] == result.num_turns
    # The user's process reaped its agents.
    assert not [p for t in results for p in claude_pids_for(t) if processes.pid_alive(p)]


def _dashboard_rows(settings: ConductorSettings) -> dict[str, dict[str, Any]]:
    from claude_conductor.dashboard import data

    frame = run_sync(data._read_tasks(settings, 100))
    return {row["task_id"]: row for row in frame.to_dict("records")}


def test_runs_from_prefect_clients_are_first_class_tasks(native: NativeStack) -> None:
    """`run_deployment` (with a task id, no name or tags) and the real `prefect deployment run`
    CLI (no id at all): both show up in `conductor tasks list/show/logs` and the dashboard's
    data layer with their status, cost, turns and branch, and read well in the Prefect UI."""
    marker = native.model.add_script(
        "from-prefect",
        [tool_use("Write", {"file_path": "notes.txt", "content": "n\n"}), text("Noted.")],
    )
    repo = str(native.repo)

    async def by_run_deployment() -> UUID:
        from prefect.deployments import arun_deployment
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: native.api_url}):
            spec = {"id": "rd-notes", "prompt": f"notes {marker}", "repo": repo}
            run = await arun_deployment("conductor-task/run", parameters={"spec": spec}, timeout=0)
        return run.id

    rd_run = run_sync(by_run_deployment())
    params = {"spec": {"kind": "generic", "title": "Notes via CLI", "prompt": f"n {marker}"}}
    params["spec"]["repo"] = repo
    argv = [sys.executable, "-m", "prefect", "deployment", "run", "conductor-task/run"]
    cli = subprocess.run(
        [*argv, "--watch", "--params", json.dumps(params)],
        env=native.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stdout[-2000:] + cli.stderr[-2000:]
    cli_run = UUID(re.search(r"UUID: ([0-9a-f-]{36})", cli.stdout).group(1))  # type: ignore[union-attr]

    async def finished(run_id: UUID) -> Any:
        from claude_conductor.client.tasks import wait_for_run

        async with conductor_client(native.settings) as client:
            return await wait_for_run(client, run_id, timeout_seconds=240)

    runs = {"rd-notes": run_sync(finished(rd_run)), None: run_sync(finished(cli_run))}
    from claude_conductor.flows.identity import task_id_of

    cli_id = task_id_of(runs.pop(None))
    assert cli_id.startswith("t-") and cli_id.endswith(cli_run.hex[:6])
    listed = native.listed()
    board = _dashboard_rows(native.settings)
    for task_id, title in (("rd-notes", f"notes {marker}"), (cli_id, "Notes via CLI")):
        row = listed[task_id]
        assert row["status"] == "succeeded", row
        assert row["cost_usd"] > 0 and row["turns"] == 2
        assert row["branch"] == f"conductor/{task_id}"
        assert git(native.repo, "show", f"conductor/{task_id}:notes.txt") == "n\n"
        doc = native.show(task_id)
        assert doc["result"]["status"] == "succeeded" and doc["result"]["task_id"] == task_id
        logs = native.cli("tasks", "logs", task_id)
        assert logs.returncode == 0 and "agent uses Write" in logs.stdout, logs.stderr
        assert API_KEY not in logs.stdout
        shown = board[task_id]
        assert (shown["status"], shown["branch"], shown["turns"]) == ("succeeded", row["branch"], 2)
        assert shown["cost_usd"] == row["cost_usd"] and shown["title"] == title

    async def in_prefect(run_id: UUID) -> Any:
        async with conductor_client(native.settings) as client:
            return await client.read_flow_run(run_id)

    seen = run_sync(in_prefect(cli_run))  # what the Prefect UI's run list shows
    assert seen.name == f"{cli_id}: Notes via CLI"
    assert {"conductor", f"task:{cli_id}", "kind:generic", "priority:5"} <= set(seen.tags)


def test_the_typed_spec_parameter_is_described_and_enforced_by_the_api(
    native: NativeStack,
) -> None:
    """What the Prefect UI's Run form is drawn from, and what any client gets for a bad value:
    a refusal naming the field, before a run exists."""
    with httpx.Client(base_url=native.api_url, timeout=30) as http:
        deployment = http.get("/deployments/name/conductor-task/run").json()
        schema = deployment["parameter_openapi_schema"]
        fields = schema["definitions"]["TaskSpec"]["properties"]
        assert schema["properties"]["spec"]["$ref"] == "#/definitions/TaskSpec"
        assert {"kind", "prompt", "repo", "max_budget_usd", "priority"} <= set(fields)
        assert all(f.get("description") for f in fields.values())
        assert deployment["enforce_parameter_schema"] is True

        def runs() -> int:
            count = http.post(
                "/flow_runs/count",
                json={"deployments": {"id": {"any_": [deployment["id"]]}}},
            )
            return int(count.json())

        before = runs()
        bad = {"kind": "nope", "prompt": "x", "repo": str(native.repo)}
        refused = http.post(
            f"/deployments/{deployment['id']}/create_flow_run",
            json={"parameters": {"spec": bad}},
        )
        assert refused.status_code == 409, refused.text
        assert "'nope' is not one of" in refused.text and "kind" in refused.text
        assert runs() == before
    argv = [sys.executable, "-m", "prefect", "deployment", "run", "conductor-task/run"]
    cli = subprocess.run(
        [*argv, "--params", json.dumps({"spec": {"prompt": "x", "max_turns": "ten"}})],
        env=native.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode != 0
    said = " ".join((cli.stdout + cli.stderr).split())
    assert "Validation failed for field 'spec.max_turns'" in said and "'ten'" in said


async def test_submit_agent_task_gives_a_handle_to_await_poll_and_cancel(
    native: NativeStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect import flow
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from claude_conductor import run_agent_task, submit_agent_task

    quick = native.model.add_script("handle-quick", [text("Handled.")])
    hang = native.model.add_script("handle-hang", [stall(600)])
    monkeypatch.chdir(native.repo)  # repo="." is the caller's directory, made absolute

    @flow
    async def dispatcher() -> tuple[TaskResult, TaskResult, Any]:
        fast = await submit_agent_task(prompt=f"quick {quick}", repo=".", priority=9)
        slow = await submit_agent_task(prompt=f"slow {hang}")
        assert await slow.poll() is None
        deadline = time.monotonic() + 120
        while not claude_pids_for(slow.task_id):
            assert time.monotonic() < deadline, "the slow agent never started"
            await asyncio.sleep(0.5)
        await slow.cancel()
        cancelled = await slow
        return await fast, cancelled, slow

    @flow
    def sync_caller() -> TaskResult:
        result: TaskResult = run_agent_task(kind="command", command="echo sync-ok", repo=".")
        return result

    with temporary_settings({PREFECT_API_URL: native.api_url}):
        done, cancelled, slow = await dispatcher()
        by_command = await asyncio.to_thread(sync_caller)

    assert done.status == "succeeded" and done.summary == "Handled." and done.cost_usd > 0
    assert cancelled.status == "cancelled", cancelled
    assert not [p for p in claude_pids_for(slow.task_id) if processes.pid_alive(p)]
    assert by_command.status == "succeeded" and "sync-ok" in by_command.summary

    async with conductor_client(native.settings) as client:
        fast_run = await client.read_flow_run((await _find(client, done.task_id)).id)
        slow_run = await client.read_flow_run(slow.flow_run_id)
    assert fast_run.work_queue_name == "urgent"  # priority 9
    assert slow_run.parent_task_run_id is not None  # linked to the dispatcher flow
    assert slow_run.state is not None and slow_run.state.is_cancelled()
    assert native.show(slow.task_id)["state"] == "Cancelled"


async def _find(client: Any, task_id: str) -> Any:
    from claude_conductor.client.tasks import find_run

    return await find_run(client, task_id)
