"""A task's own commands (`kind: command`, `verify`) confined on the process placement: they
run the repository's code, so they get the agent's boundary, in bubblewrap. Real processes,
real git, a real Prefect stack (tests/stack_fixtures.py).

- A command and a verify command try to write `../escape.txt`, a file under /tmp, the user's
  checkout, a sibling worktree and the repository's hooks; to read `<home>/config.yaml`, the
  Prefect database and the engine's `/proc/<pid>/environ`; and to reach the live stack's
  Prefect API. All fail; their own changes in the worktree are committed by the engine.
- A command task submitted to the stack (forked engine, real worker) is confined the same way.
- `agent.sandbox=false`: they run as before.
- Timeout and cancellation leave no process behind, bwrap and its children included.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from claude_conductor.agents.placement import ProcessPlacement
from claude_conductor.agents.shell import run_shell
from claude_conductor.client.connection import conductor_client
from claude_conductor.client.tasks import submit_task, task_result, wait_for_run
from claude_conductor.flows.steps import execute_task, prepare
from claude_conductor.models import TaskResult, TaskSpec, TaskStatus
from claude_conductor.settings import AgentSettings, ConductorSettings
from helpers import git, make_repo
from stack_fixtures import Stack

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="apt-get install bubblewrap"),
]

ENGINE_SECRET_VARIABLE = "CONDUCTOR_ENGINE_ONLY_PROBE"


@pytest.fixture
def root() -> Iterator[Path]:
    """A folder outside /tmp (which the sandbox hides wholesale), as `~/.conductor` is: the
    control files and sibling worktrees in it must be hidden one by one."""
    folder = Path(tempfile.mkdtemp(prefix="conductor-confine-", dir="/var/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def outside_tmp() -> Iterator[Path]:
    path = Path("/tmp") / f"conductor-escape-{uuid.uuid4().hex[:12]}.txt"
    yield path
    path.unlink(missing_ok=True)


def _settings(home: Path, **agent: object) -> ConductorSettings:
    return ConductorSettings(home=home, agent=AgentSettings(**agent))  # type: ignore[arg-type]


def _probes(prefix: str, attempts: dict[str, str]) -> str:
    """A shell script that tries each attempt and says, for each, whether it got through."""
    return "; ".join(
        f"if ( {cmd} ) >/dev/null 2>&1; then echo {prefix}-GOT-{name}; "
        f"else echo {prefix}-refused-{name}; fi"
        for name, cmd in attempts.items()
    )


def _hits(output: str) -> list[str]:
    return [line for line in output.splitlines() if "-GOT-" in line]


def _run(spec: TaskSpec, settings: ConductorSettings) -> TaskResult:
    env = {"PATH": os.environ["PATH"], "HOME": str(settings.home.parent), "LANG": "C.UTF-8"}
    return asyncio.run(execute_task(spec, settings, base_env=env))


def test_command_and_verify_cannot_escape_and_their_own_work_is_committed(
    conductor_stack: Stack,
    root: Path,
    outside_tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = conductor_stack.settings.server.url
    with urllib.request.urlopen(f"{api}/health", timeout=10) as answer:  # reachable from here
        assert answer.status == 200
    secret = f"engine-only-{uuid.uuid4().hex}"
    monkeypatch.setenv(ENGINE_SECRET_VARIABLE, secret)  # in the engine's (this process's) env
    settings = _settings(root / "home")
    settings.home.mkdir()
    config = settings.home / "config.yaml"
    config.write_text(f"dashboard:\n  password: {secret}\n")
    shutil.copytree(conductor_stack.home / "prefect", settings.home / "prefect", symlinks=True)
    (database,) = (settings.home / "prefect").rglob("*.db")
    user_repo = make_repo(root / "project")
    common = user_repo / ".git"
    sibling = prepare(TaskSpec(id="sibling", prompt="x", repo=str(user_repo)), settings)
    checkout_before = (user_repo / "main.py").read_text()

    attempts = {
        "up": "echo pwned >> ../escape.txt",
        "tmp": f"echo pwned >> {outside_tmp}",
        "checkout": f"echo pwned >> {user_repo}/main.py",
        "sibling": f"echo pwned >> {sibling.path}/main.py",
        "hook": f"echo 'touch {outside_tmp}' > {common}/hooks/post-commit",
        "git-pointer": "echo 'gitdir: /elsewhere' > .git",
        "config": f"grep -q {secret} {config}",
        "database": f"head -c 16 {database} | grep -q SQLite",
        "engine-environ": f"grep -aq {secret} /proc/{os.getpid()}/environ",
        "any-environ": f"cat /proc/[0-9]*/environ | grep -aq {ENGINE_SECRET_VARIABLE}",
        "api-curl": f"curl -sf -m 5 {api}/health",
        "api-python": f"python3 -c \"import urllib.request as u; u.urlopen('{api}/health', timeout=5)\"",
        "run-sockets": 'test -n "$(ls -A /run)"',
    }  # fmt: skip
    own = "echo mine > own.txt && echo scratch > $TMPDIR/s && cat $TMPDIR/s && echo TMPDIR=$TMPDIR"
    spec = TaskSpec(
        id="probe",
        kind="command",
        repo=str(user_repo),
        command=f"{_probes('C', attempts)}; {own}",
        verify=f"{_probes('V', attempts)}; test -f own.txt && echo checked > verified.txt",
        timeout_seconds=60,
    )

    result = _run(spec, settings)

    command_output, verify_output = (
        result.summary,
        result.verify.output_tail if result.verify else "",
    )
    assert _hits(command_output) == [] and _hits(verify_output) == []
    assert command_output.count("C-refused-") == len(attempts), command_output
    assert verify_output.count("V-refused-") == len(attempts), verify_output
    # Nothing outside the worktree changed.
    assert not (settings.workspaces_dir / "escape.txt").exists() and not outside_tmp.exists()
    assert (user_repo / "main.py").read_text() == checkout_before
    assert git(user_repo, "status", "--porcelain") == ""
    assert (sibling.path / "main.py").read_text() == checkout_before
    assert not (common / "hooks" / "post-commit").exists()
    # Their own work is committed by the engine, on the task's branch; the temp folder worked
    # and is gone.
    assert result.status is TaskStatus.SUCCEEDED, result.error
    assert sorted(result.files_changed) == ["own.txt", "verified.txt"]
    assert git(user_repo, "show", f"{result.branch}:own.txt") == "mine\n"
    temp = command_output.split("TMPDIR=")[-1].split()[0]
    assert temp.startswith("/tmp/ccd-") and "scratch" in command_output
    assert not Path(temp).exists()


def test_a_command_task_on_the_stack_is_confined(conductor_stack: Stack, tmp_path: Path) -> None:
    """Through the real worker and its forked engine, which holds the API's address."""
    api = conductor_stack.settings.server.url
    attempts = {
        "api": f"curl -sf -m 5 {api}/health",
        "prefect-environ": "cat /proc/[0-9]*/environ | grep -aq PREFECT_API_URL",
        "stack-home": f"ls {conductor_stack.home}/prefect",
    }
    spec = TaskSpec(
        kind="command",
        title="confined on the stack",
        repo=str(make_repo(tmp_path / "repo")),
        command=f"{_probes('S', attempts)}; echo done > done.txt",
        timeout_seconds=60,
    )

    async def go() -> TaskResult | None:
        async with conductor_client(conductor_stack.settings) as client:
            run = await submit_task(client, spec)
            final = await wait_for_run(client, run.id, timeout_seconds=120)
            return await task_result(client, final)

    result = asyncio.run(go())
    assert result is not None and result.status is TaskStatus.SUCCEEDED, result
    assert _hits(result.summary) == [] and result.summary.count("S-refused-") == len(attempts)
    assert result.files_changed == ["done.txt"]


def test_sandbox_off_runs_commands_as_before(root: Path, outside_tmp: Path) -> None:
    settings = _settings(root / "home", sandbox=False)
    spec = TaskSpec(
        kind="command",
        repo=str(make_repo(root / "project")),
        command=f"echo out > {outside_tmp} && echo TMPDIR=${{TMPDIR:-unset}}",
        timeout_seconds=60,
    )
    result = _run(spec, settings)
    assert result.status is TaskStatus.SUCCEEDED, result.error
    assert outside_tmp.read_text() == "out\n"  # what turning the sandbox off gives away
    assert "TMPDIR=unset" in result.summary


# --------------------------------------------------------------------------- no orphans


def _alive(token: str, *, exact: bool = False) -> list[int]:
    """Live processes whose command line holds ``token`` (bwrap's holds the workspace), or
    is ``token`` when ``exact``."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            if proc.info["status"] != psutil.STATUS_ZOMBIE and (
                cmdline == token if exact else token in cmdline
            ):
                found.append(proc.info["pid"])
        except psutil.Error:
            continue
    return found


def _temp_folders() -> set[Path]:
    return set(Path("/tmp").glob("ccd-*"))


def test_timeout_stops_the_sandbox_and_everything_in_it(root: Path) -> None:
    workspace = make_repo(root / "work")
    placement = ProcessPlacement(_settings(root / "home"))
    before = _temp_folders()
    done = asyncio.run(
        run_shell("sleep 3171 & sleep 3172; wait", workspace, 1, {"PATH": os.environ["PATH"]},
                  placement=placement, kill_grace_seconds=0.5)
    )  # fmt: skip
    assert done.timed_out
    assert _alive("sleep 317") == [] and _alive(str(workspace)) == []
    assert _temp_folders() <= before


def test_cancellation_stops_the_sandbox_and_everything_in_it(root: Path) -> None:
    workspace = make_repo(root / "work")
    placement = ProcessPlacement(_settings(root / "home"))
    before = _temp_folders()

    async def go() -> list[int]:
        task = asyncio.create_task(
            run_shell("sleep 3173 & sleep 3174; wait", workspace, 60, {"PATH": os.environ["PATH"]},
                      placement=placement, kill_grace_seconds=0.5)
        )  # fmt: skip
        for _ in range(200):
            if _alive("sleep 3173", exact=True) and _alive("sleep 3174", exact=True):
                break
            await asyncio.sleep(0.05)
        running = _alive("sleep 317") + _alive(str(workspace))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return running

    running = asyncio.run(go())
    assert len(running) >= 4, "the sandbox (bwrap), its shell and both sleeps were running"
    assert _alive("sleep 317") == [] and _alive(str(workspace)) == []
    assert _temp_folders() <= before
