"""Recorded processes (``processes.record_process``): how ``conductor down`` finds a flow run's
engine, which is non-dumpable and so cannot be found by its environment unless one is root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from claude_conductor.system import processes
from helpers import as_unprivileged_user

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")

NOBODY = 65534

# An engine as the forkserver makes it: non-dumpable, holding the stack's marker and a secret,
# recorded in a folder, with a child (its agent) that runs a program of its own.
_HOLDER = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from pathlib import Path
    from claude_conductor.system.hardening import make_undumpable
    from claude_conductor.system.processes import record_process
    assert make_undumpable()
    child = subprocess.Popen(["sleep", "60"])
    record_process(Path(sys.argv[1]), os.getpid(), label="flow run x")
    print(child.pid, flush=True)
    time.sleep(60)
    """
)

# What `down` does to find it, run as the same (non-root) user.
_FINDER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from claude_conductor.system import processes
    records = processes.recorded_processes(Path(sys.argv[1]))
    print(json.dumps({
        "by_env": processes.find_processes_with_env("CONDUCTOR_STACK", sys.argv[2]),
        "recorded": [r.pid for r in records],
        "labels": [r.label for r in records],
        "descendants": {r.pid: processes.descendants(r.pid) for r in records},
    }))
    """
)


def _as_user() -> list[str]:
    return list(as_unprivileged_user())


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder the unprivileged user can write (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="conductor-records-"))
    if os.geteuid() == 0:
        os.chown(path, NOBODY, NOBODY)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_a_non_dumpable_process_is_found_by_its_record_not_its_environment(
    shared_dir: Path,
) -> None:
    marker = f"home-{os.getpid()}"
    records = shared_dir / "flow-runs"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CONDUCTOR_STACK": marker}
    holder = subprocess.Popen(
        [*_as_user(), sys.executable, "-c", _HOLDER, str(records)],
        stdout=subprocess.PIPE,
        text=True,
        env={**env, "PREFECT_API_AUTH_STRING": "user:s3cret"},
    )
    try:
        assert holder.stdout is not None
        child = int(holder.stdout.readline())
        out = subprocess.run(
            [*_as_user(), sys.executable, "-c", _FINDER, str(records), marker],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=True,
        )
        found = json.loads(out.stdout)
        # Its environment cannot be read (its child's can: it ran a program of its own).
        assert found["by_env"] == [child]
        assert found["recorded"] == [holder.pid]
        assert found["labels"] == ["flow run x"]
        assert found["descendants"] == {str(holder.pid): [child]}
    finally:
        holder.kill()
        holder.wait(timeout=10)
    # Once it has ended its record is dropped, and a recycled PID is never taken for it.
    assert processes.recorded_processes(records) == []
    assert not list(records.glob("*.json"))


def test_a_record_whose_start_time_does_not_match_is_not_the_process(tmp_path: Path) -> None:
    me = processes.record_process(tmp_path, os.getpid(), label="me")
    assert me is not None
    [record] = processes.recorded_processes(tmp_path)
    assert record.pid == os.getpid() and record.alive
    reused = record.model_copy(update={"start_ticks": record.start_ticks - 1})
    me.write_text(reused.model_dump_json())
    assert processes.recorded_processes(tmp_path) == []
    assert not me.exists()
    processes.record_process(tmp_path, os.getpid())
    processes.forget_process(tmp_path, os.getpid())
    assert processes.recorded_processes(tmp_path) == []
