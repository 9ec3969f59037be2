"""``benchmarks/control_plane_load.py --quick``: the control-plane load harness runs end to
end against a real PostgreSQL, Redis and Prefect API (split: ``--no-services`` + services),
its virtual agents' runs end Completed with their task runs recorded, and nothing it started
is left running, after a normal run and after Ctrl-C.

The figures of a quick run mean nothing (a few agents for seconds); the full run is a
benchmark (``benchmarks/README.md``), never a timed assertion here.
"""

from __future__ import annotations

import ast
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "control_plane_load.py"


def _require_servers() -> None:
    """PostgreSQL and Redis binaries (Debian's packages; `.ci/run` installs them)."""
    have_pg = bool(shutil.which("initdb")) or bool(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    missing = [
        pkg
        for pkg, ok in (
            ("postgresql", have_pg),
            ("redis-server", bool(shutil.which("redis-server"))),
        )
        if not ok
    ]
    if missing:
        message = f"needs {', '.join(missing)}: apt-get install {' '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pids: list[int], timeout_seconds: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        left = [p for p in pids if not _gone(p)]
        if not left:
            return []
        time.sleep(0.2)
    return [p for p in pids if not _gone(p)]


def _pids_from(stderr_lines: list[str]) -> list[int]:
    pids: list[int] = []
    for line in stderr_lines:
        if "(pids {" in line:
            pids += list(ast.literal_eval(line[line.index("{") : line.rindex("}") + 1]).values())
        if "load generators [" in line:
            pids += ast.literal_eval(line[line.index("[") : line.rindex("]") + 1])
    return pids


@pytest.mark.integration
def test_quick_run_completes_every_virtual_task_and_stops_everything(tmp_path: Path) -> None:
    _require_servers()
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (json_path,) = tmp_path.glob("control-plane-*-quick.json")
    doc = json.loads(json_path.read_text())
    assert [s["agents"] for s in doc["steps"]] == [4, 8]
    assert doc["versions"]["postgresql"].startswith("postgres")
    assert "Redis" in doc["versions"]["redis"]
    for step in doc["steps"]:
        counts = step["counts"]
        # Why tasks did not complete, if they did not: the agents' and the servers' errors.
        why = {k: step[k] for k in ("counts", "errors", "server_errors", "statuses")}
        assert counts.get("tasks_completed", 0) == counts["tasks_started"] >= step["agents"], why
        assert "tasks_failed" not in counts and "tasks_unfinished" not in counts, why
        # What a user of the cluster would see: every run Completed, its four task runs
        # recorded by the services from the agents' events.
        assert step["flow_runs_completed"] == counts["tasks_completed"]
        assert step["task_runs_recorded"] == 4 * counts["tasks_completed"]
        assert counts["events_sent"] > 0 and "events_failed" not in counts
        assert set(step["statuses"]) == {"2xx"}, step["statuses"]
        for request in (
            "POST /deployments/{id}/create_flow_run",
            "POST /flow_runs/{id}/set_state",
            "POST /logs/",
            "POST /artifacts/",
        ):
            assert step["request_counts"].get(request, 0) >= counts["tasks_completed"], request
        assert step["overall"]["p95_ms"] is not None
        assert step["cpu_seconds"]["api"] > 0 and step["cpu_seconds"]["postgres"] > 0
    markdown = (json_path.with_suffix(".md")).read_text()
    assert "| agents |" in markdown and "What was simulated" in markdown
    started = [*doc["pids"].values(), *_pids_from(out.stderr.splitlines())]
    assert len(started) >= 4 + 2
    assert _wait_gone(started) == [], "processes left running after the benchmark"


@pytest.mark.integration
def test_ctrl_c_mid_step_stops_everything_it_started(tmp_path: Path) -> None:
    _require_servers()
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--quick", "--out-dir", str(tmp_path)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "load generators [" in line:
                break
        time.sleep(2.0)  # agents are talking to the API now
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines += (rest or "").splitlines()
    assert proc.returncode == 130, "".join(lines)[-2000:]
    assert "interrupted" in "".join(lines)
    started = _pids_from(lines)
    assert len(started) >= 4 + 1, lines
    assert _wait_gone(started) == [], "processes left running after Ctrl-C"
    assert not list(tmp_path.glob("control-plane-*")), "no results from an interrupted run"


def test_bad_option_is_one_clear_line_and_exit_2() -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--agents", "ten"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "--agents 'ten' is not a comma-separated list of integers" in out.stderr
