"""The ``docker`` placement on a real Docker engine, without a stack: what runs in an agent
container is confined (non-root, read-only, no capabilities, only its worktree and the git it
needs, read-only), gets only the environment it was given, and leaves no container behind on
success, timeout or cancellation."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker_stack_fixtures import require_docker

from claude_conductor.agents.docker_placement import TASK_LABEL, DockerPlacement, git_binds
from claude_conductor.agents.placement import LaunchRequest, get_placement
from claude_conductor.agents.shell import run_shell
from claude_conductor.errors import AgentError
from claude_conductor.settings import ConductorSettings

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.timeout(300)]

UID = 10001


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "safe.directory=*", *args], cwd=cwd, check=True, capture_output=True,
        text=True,
    ).stdout  # fmt: skip


@pytest.fixture(scope="module")
def network() -> Iterator[str]:
    require_docker()
    name = f"ctp-{secrets.token_hex(3)}"
    subprocess.run(
        ["docker", "network", "create", "--internal",
         "-o", "com.docker.network.bridge.inhibit_ipv4=true", name],
        check=True, capture_output=True,
    )  # fmt: skip
    yield name
    subprocess.run(["docker", "network", "rm", name], capture_output=True)


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    """A repository and a linked worktree of it, as the engine makes them, owned by UID."""
    repo, ws = tmp_path / "repo", tmp_path / "home" / "workspaces" / "t-place"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "a.txt").write_text("a\n")
    _git(repo, "add", "a.txt")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a")
    ws.parent.mkdir(parents=True)
    _git(repo, "worktree", "add", "-q", "-b", "conductor/t-place", str(ws))
    subprocess.run(["chown", "-R", f"{UID}:{UID}", str(tmp_path)], check=True)
    return ws


def _settings(tmp_path: Path, network: str) -> ConductorSettings:
    return ConductorSettings.model_validate(
        {
            "home": str(tmp_path / "home"),
            "agent": {
                "placement": "docker",
                "docker": {"network": network, "user": f"{UID}:{UID}", "memory": "256m",
                           "cpus": 0.5, "pids_limit": 64},
            },
        }
    )  # fmt: skip


def _containers(task_id: str) -> list[str]:
    return subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={TASK_LABEL}={task_id}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip


PROBE = r"""
import json, os, subprocess
def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as exc:
        return type(exc).__name__
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
gitdir = open(".git").read().split(":", 1)[1].strip()
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(),
    "cap_eff": status["CapEff"].strip(), "no_new_privs": status["NoNewPrivs"].strip(),
    "env": sorted(os.environ),
    "given": os.environ.get("GIVEN"),
    "home": os.environ["HOME"],
    "write_root": attempt(lambda: open("/probe", "w")),
    "write_workspace": attempt(lambda: open("new.txt", "w").write("x")),
    "write_home": attempt(lambda: open(os.environ["HOME"] + "/x", "w").write("x")),
    "write_dot_git": attempt(lambda: open(".git", "a").write("x")),
    "write_git_config": attempt(lambda: open(gitdir + "/../../config", "a").write("x")),
    "docker_socket": os.path.exists("/var/run/docker.sock") or os.path.exists("/run/docker.sock"),
    "git_status": subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout,
    "mounts": [line.split()[4] for line in open("/proc/self/mountinfo")],
}))
"""


def test_a_command_runs_confined_in_its_own_container_and_is_removed(
    tmp_path: Path, network: str, worktree: Path
) -> None:
    settings = _settings(tmp_path, network)
    placement = get_placement(settings)
    assert isinstance(placement, DockerPlacement)
    env = {"PATH": "/opt/venv/bin:/usr/bin:/bin", "GIVEN": "yes", "LANG": "C.UTF-8"}
    done = asyncio.run(
        run_shell(f"python3 - <<'EOF'\n{PROBE}\nEOF", worktree, 120, env,
                  placement=placement, task_id="t-place")
    )  # fmt: skip
    assert done.exit_code == 0, done.output_tail
    seen = json.loads(done.output_tail.strip().splitlines()[-1])
    assert (seen["uid"], seen["gid"]) == (UID, UID)
    assert int(seen["cap_eff"], 16) == 0 and seen["no_new_privs"] == "1"
    assert seen["given"] == "yes" and seen["home"] == "/home/agent"
    # Only what it was given, the placement's own (HOME, TMPDIR) and the image's defaults.
    image_env = json.loads(
        subprocess.run(
            ["docker", "image", "inspect", "--format", "{{json .Config.Env}}",
             settings.agent.docker.image],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    allowed = {
        *env,
        "HOME",
        "TMPDIR",
        "HOSTNAME",
        "PWD",
        "SHLVL",
        "_",
        *(item.split("=", 1)[0] for item in image_env),
    }
    assert set(seen["env"]) <= allowed, set(seen["env"]) - allowed
    assert not {"PREFECT_API_URL", "PREFECT_API_AUTH_STRING"} & set(seen["env"])
    assert seen["write_root"] != "ok"  # read-only root filesystem
    assert seen["write_workspace"] == "ok" and seen["write_home"] == "ok"
    assert seen["write_dot_git"] != "ok" and seen["write_git_config"] != "ok"
    assert seen["docker_socket"] is False
    assert "?? new.txt" in seen["git_status"]  # git works in the worktree
    # Mounted: the worktree (and its .git, the repository's git directory); no other path of
    # the home (other tasks' worktrees, results, config) or of the repository.
    home = str(tmp_path / "home")
    assert {m for m in seen["mounts"] if m.startswith(home)} == {
        str(worktree), str(worktree / ".git")
    }  # fmt: skip
    assert {m for m in seen["mounts"] if m.startswith(str(tmp_path / "repo"))} == {
        str(tmp_path / "repo" / ".git")
    }
    assert (worktree / "new.txt").read_text() == "x"
    assert _containers("t-place") == []


def test_exit_codes_and_stderr_come_back(tmp_path: Path, network: str, worktree: Path) -> None:
    placement = get_placement(_settings(tmp_path, network))
    done = asyncio.run(
        run_shell("echo out; echo err >&2; exit 3", worktree, 60, {"PATH": "/usr/bin:/bin"},
                  placement=placement, task_id="t-codes")
    )  # fmt: skip
    assert done.exit_code == 3
    assert "out" in done.output_tail and "err" in done.output_tail
    assert _containers("t-codes") == []


def test_timeout_and_cancellation_leave_no_container(
    tmp_path: Path, network: str, worktree: Path
) -> None:
    placement = get_placement(_settings(tmp_path, network))
    env = {"PATH": "/usr/bin:/bin"}
    done = asyncio.run(
        run_shell("sleep 60", worktree, 2, env, placement=placement, task_id="t-timeout",
                  kill_grace_seconds=1)
    )  # fmt: skip
    assert done.timed_out
    assert _containers("t-timeout") == []

    async def cancel_midway() -> None:
        task = asyncio.create_task(
            run_shell("sleep 60", worktree, 120, env, placement=placement, task_id="t-cancel",
                      kill_grace_seconds=1)
        )  # fmt: skip
        for _ in range(100):
            if _containers("t-cancel"):
                break
            await asyncio.sleep(0.1)
        assert _containers("t-cancel"), "the container never started"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_midway())
    assert _containers("t-cancel") == []


def test_the_placement_refuses_root_and_a_missing_network(tmp_path: Path, worktree: Path) -> None:
    request = LaunchRequest("t-x", "shell", ["/bin/true"], {}, worktree, 5)
    no_network = ConductorSettings.model_validate(
        {"home": str(tmp_path), "agent": {"placement": "docker", "docker": {"user": "5:5"}}}
    )
    with pytest.raises(AgentError, match="CONDUCTOR_AGENT__DOCKER__NETWORK"):
        DockerPlacement(no_network).plan(request)
    root = ConductorSettings.model_validate(
        {"home": str(tmp_path), "agent": {"placement": "docker", "docker": {"network": "n"}}}
    )
    if os.getuid() == 0:
        with pytest.raises(AgentError, match="never run as root"):
            DockerPlacement(root).plan(request)
    assert git_binds(worktree)[0] == f"{worktree / '.git'}:{worktree / '.git'}:ro"
