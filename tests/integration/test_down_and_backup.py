"""`conductor down` while a task runs, and backup/restore of the standalone tier, on a private
real stack (down stops it, so it cannot be the shared one): the real Prefect server and
workers, the real `claude` against the scripted model, driven through the `conductor` CLI.

Order matters (one stack for the module): down-while-running first, then the backup taken
while the stack runs, a restore refused over the live stack, and a restore into an emptied
home that `conductor up` then serves.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from claude_conductor.agents.argv import find_claude
from claude_conductor.demo.script_steps import stall, text, tool_use
from claude_conductor.demo.scripted_model import ScriptedModel
from claude_conductor.settings import ConductorSettings
from claude_conductor.system import processes
from claude_conductor.tiers import standalone
from claude_conductor.tiers.standalone import launch
from helpers import claude_pids_for, git, make_repo
from stack_fixtures import free_port, make_settings

pytestmark = pytest.mark.integration

_UP_TIMEOUT_SECONDS = 420.0


@dataclass
class Private:
    settings: ConductorSettings
    model: ScriptedModel
    env: dict[str, str]
    repo: Path
    root: Path
    seen: dict[str, Any] = field(default_factory=dict)

    def cli(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "claude_conductor.cli.main", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ok(self, *args: str, timeout: float = 240) -> str:
        out = self.cli(*args, timeout=timeout)
        assert out.returncode == 0, (args, out.stdout[-2000:], out.stderr[-3000:])
        return out.stdout

    def up(self) -> None:
        """`conductor up` (in-process, with a start budget for a shared, loaded machine)."""
        standalone.up(self.settings, base_env=self.env, timeout_seconds=_UP_TIMEOUT_SECONDS)

    def show(self, task_id: str) -> dict[str, Any]:
        out = self.cli("tasks", "show", task_id, "--json")
        assert out.returncode in (0, 1), out.stderr
        doc: dict[str, Any] = json.loads(out.stdout)
        return doc


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory, agent_home: Path) -> Iterator[Private]:
    try:
        find_claude(ConductorSettings())
    except Exception as exc:  # pragma: no cover - only without the dev install
        pytest.skip(f"no claude binary: {exc}")
    root = tmp_path_factory.mktemp("down-backup")
    repo = make_repo(root / "project")
    settings = make_settings(root / "home", free_port(), agents=2)
    with ScriptedModel() as model:
        clean = {
            k: v for k, v in os.environ.items() if not k.startswith(("CONDUCTOR_", "PREFECT_"))
        }
        env = {
            **clean,
            "ANTHROPIC_BASE_URL": model.url,
            "ANTHROPIC_API_KEY": "sk-down-backup-test-0123456789",
            "CLAUDE_CODE_MAX_RETRIES": "0",
            "HOME": str(agent_home),
            "CONDUCTOR_HOME": str(settings.home),
            "CONDUCTOR_SERVER__PORT": str(settings.server.port),
            "CONDUCTOR_WORKER__QUERY_SECONDS": "0.5",
            "CONDUCTOR_DASHBOARD__ENABLED": "false",
            "CONDUCTOR_AGENT__RESULT_GRACE_SECONDS": "1",
            "CONDUCTOR_AGENT__KILL_GRACE_SECONDS": "1",
        }
        try:
            standalone.up(settings, base_env=env, timeout_seconds=_UP_TIMEOUT_SECONDS)
            yield Private(settings=settings, model=model, env=env, repo=repo, root=root)
        finally:
            standalone.down(settings, grace_seconds=5)


def _wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _stack_processes(settings: ConductorSettings) -> list[int]:
    return processes.find_processes_with_env(launch.STACK_MARKER, str(settings.home))


def test_down_while_a_task_runs_says_down_stopped_it(private: Private) -> None:
    done = private.model.add_script(
        "hello",
        [tool_use("Write", {"file_path": "hello.txt", "content": "hello\n"}), text("Wrote it.")],
    )
    out = private.ok(
        "run", "--prompt", f"say hello {done}", "--repo", str(private.repo), "--wait", "--json"
    )
    finished = json.loads(out)
    assert finished["status"] == "succeeded"
    private.seen["done"] = finished["task_id"]

    hang = private.model.add_script(
        "hang", [tool_use("Write", {"file_path": "partial.txt", "content": "half\n"}), stall(600)]
    )
    submitted = private.cli("run", "--prompt", f"hang {hang}", "--repo", str(private.repo))
    assert submitted.returncode == 0, submitted.stderr
    task_id = next(x for x in submitted.stderr.splitlines() if x.startswith("submitted "))
    task_id = task_id.split()[1]
    private.seen["stopped"] = task_id
    pids = _wait_for(lambda: claude_pids_for(task_id), 120, "the agent to start")
    _wait_for(
        lambda: (private.settings.workspaces_dir / task_id / "partial.txt").exists(),
        60,
        "the agent's first write",
    )

    private.ok("down")
    assert not any(processes.pid_alive(p) for p in pids), "the agent outlived `conductor down`"
    assert _stack_processes(private.settings) == [], "processes of the stack outlived down"
    result = json.loads(
        (private.settings.results_dir / task_id / "result.json").read_text(encoding="utf-8")
    )
    assert result["status"] == "cancelled"
    assert "stopped by `conductor down`" in result["error"]
    assert "cancelled by the user" not in result["error"]
    # The work so far is kept on the branch.
    assert git(private.repo, "show", f"conductor/{task_id}:partial.txt") == "half\n"

    private.up()
    doc = private.show(task_id)
    assert doc["state"] == "Cancelled", doc
    assert "stopped by `conductor down`" in doc["result"]["error"]
    assert private.show(private.seen["done"])["state"] == "Completed"


def test_backup_while_running_then_restore_into_an_empty_home(private: Private) -> None:
    if "done" not in private.seen:
        pytest.skip("needs the tasks of the down test (run the module, not one test)")
    before = json.loads(private.ok("tasks", "list", "--json"))
    before_rows = {r["task_id"]: (r["state"], r["status"], r["branch"]) for r in before}
    assert {private.seen["done"], private.seen["stopped"]} <= set(before_rows)
    shown = {t: private.show(t)["result"] for t in before_rows}
    patch_path = Path(shown[private.seen["done"]]["patch_path"])
    patch = patch_path.read_text(encoding="utf-8")
    assert "hello.txt" in patch

    target = private.root / "backup"
    info = json.loads(private.ok("backup", "--to", str(target), "--json"))
    assert info["stack_was_running"] is True
    assert info["flow_runs"] >= 2
    assert (target / "prefect.db").is_file() and (target / "results").is_dir()

    refused = private.cli("restore", str(target))
    assert refused.returncode == 2
    assert "is running" in refused.stderr and "conductor down" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    again = private.cli("backup", "--to", str(target))
    assert again.returncode == 2 and "not an empty folder" in again.stderr

    private.ok("down")
    shutil.rmtree(private.settings.home)
    private.ok("restore", str(target))
    private.up()

    after = json.loads(private.ok("tasks", "list", "--json"))
    after_rows = {r["task_id"]: (r["state"], r["status"], r["branch"]) for r in after}
    assert after_rows == before_rows
    for task_id, result in shown.items():
        again_shown = private.show(task_id)["result"]
        for key in ("status", "summary", "files_changed", "head_commit", "error", "cost_usd"):
            assert again_shown[key] == result[key], (task_id, key)
    assert patch_path.read_text(encoding="utf-8") == patch
    text_view = private.ok("tasks", "show", private.seen["done"])
    assert "hello.txt" in text_view
