"""The stack commands' answers when nothing is running, and their bad input: one clear line,
exit 2 (status: exit 1), nothing created."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import make_repo
from stack_fixtures import free_port


def conductor(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDUCTOR_", "PREFECT_"))}
    env |= {"CONDUCTOR_HOME": str(home), "CONDUCTOR_SERVER__PORT": str(free_port())}
    return subprocess.run(
        [sys.executable, "-m", "claude_conductor.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "args",
    [
        ("tasks", "list"),
        ("tasks", "show", "t-0123456789ab"),
        ("tasks", "logs", "t-0123456789ab"),
        ("tasks", "cancel", "t-0123456789ab"),
        ("run", "--prompt", "hello", "--repo", "."),
    ],
)
def test_without_a_server_says_how_to_start_it(tmp_path: Path, args: tuple[str, ...]) -> None:
    out = conductor(tmp_path / "home", *args)
    assert out.returncode == 2, out
    assert "not running" in out.stderr and "conductor up" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "home").exists()


def test_status_without_a_server_is_unhealthy_and_says_how_to_start_it(tmp_path: Path) -> None:
    out = conductor(tmp_path / "home", "status")
    assert out.returncode == 1
    assert "not answering" in out.stdout
    assert "conductor up" in out.stderr


@pytest.mark.parametrize("count", ["0", "-1", "-5"])
def test_agents_scale_needs_at_least_one_slot(tmp_path: Path, count: str) -> None:
    out = conductor(tmp_path / "home", "agents", "scale", count)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"error: agents scale {count}: give at least 1 agent slot "
        "(to stop all agents: conductor down)"
    ]
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize("command", [("up",), ("down",), ("status",), ("agents", "scale", "2")])
def test_an_unknown_tier_is_named_with_the_choices(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    out = conductor(tmp_path / "home", *command, "--tier", "mainframe")
    assert out.returncode == 2
    assert "'mainframe'" in out.stderr and "standalone, docker" in out.stderr
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "does not exist"),
        ("plain-folder", "is not a git repository"),
        ("unknown-ref", "no-such-branch"),
        ("subtask-missing", "does not exist"),
    ],
)
def test_a_bad_repository_is_refused_before_anything_is_submitted(
    tmp_path: Path, case: str, expected: str
) -> None:
    repo = make_repo(tmp_path / "project")
    (tmp_path / "plain-folder").mkdir()
    task = {
        "missing": f"repo: {tmp_path / 'nowhere'}\nprompt: hi\n",
        "plain-folder": f"repo: {tmp_path / 'plain-folder'}\nprompt: hi\n",
        "unknown-ref": f"repo: {repo}\nref: no-such-branch\nprompt: hi\n",
        "subtask-missing": f"repo: {repo}\nprompt: hi\nsubtasks:\n"
        f"  - prompt: one\n  - prompt: two\n    repo: {tmp_path / 'nowhere'}\n",
    }[case]
    (tmp_path / "task.yaml").write_text(task)
    # No server runs: the repository is checked first, so the error names it (not the server).
    out = conductor(tmp_path / "home", "run", str(tmp_path / "task.yaml"), "--wait")
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "repo" in lines[0], lines
    assert not (tmp_path / "home").exists()


def test_a_good_repository_goes_on_to_the_server(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "project")
    out = conductor(tmp_path / "home", "run", "--prompt", "hi", "--repo", str(repo))
    assert out.returncode == 2
    assert "not running" in out.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the repository away")
def test_a_repository_git_will_not_read_here_is_left_to_the_worker(tmp_path: Path) -> None:
    # The docker tier's repositories belong to the agents' uid: git on the host calls them
    # "dubious ownership"; that is not bad input, so the submission goes on (to the server).
    repo = make_repo(tmp_path / "project")
    for path in [repo, *repo.rglob("*")]:
        os.lchown(path, 12345, 12345)
    out = conductor(tmp_path / "home", "run", "--prompt", "hi", "--repo", str(repo))
    assert out.returncode == 2
    assert "not running" in out.stderr, out.stderr


@pytest.mark.parametrize("tier", ["standalone", "docker"])
def test_agents_scale_goes_to_the_tier_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tier: str
) -> None:
    from claude_conductor.cli._common import invoke
    from claude_conductor.cli.main import app
    from claude_conductor.tiers.docker import stack as docker
    from claude_conductor.tiers.standalone import stack as standalone

    calls: list[tuple[str, int]] = []
    for name, module in (("standalone", standalone), ("docker", docker)):
        monkeypatch.setattr(
            module, "scale_agents", lambda _s, n, _name=name: calls.append((_name, n)) or "ok"
        )
    monkeypatch.setenv("CONDUCTOR_HOME", str(tmp_path / "home"))
    assert invoke(app, ["agents", "scale", "3", "--tier", tier]) == 0
    assert calls == [(tier, 3)]


def test_stop_is_down(tmp_path: Path) -> None:
    down = conductor(tmp_path / "h", "down", "--json")
    stop = conductor(tmp_path / "h", "stop", "--json")
    assert stop.returncode == down.returncode == 0, stop.stderr
    assert stop.stdout == down.stdout
    assert "Same as `conductor down`" in conductor(tmp_path / "h", "--help").stdout
