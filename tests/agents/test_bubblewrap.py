"""The sandbox of a task's own commands, built pure: the bwrap argv the process placement runs
`kind: command` and verify in, and the plan around it. The sandbox enforcing it, with real
processes: tests/integration/test_shell_confinement.py."""

from __future__ import annotations

import asyncio
import stat
import sys
from pathlib import Path

import pytest

from claude_conductor.agents.bubblewrap import bubblewrap_argv, git_dirs, paths_to_hide
from claude_conductor.agents.confinement import Confinement, confinement_for
from claude_conductor.agents.placement import LaunchRequest, ProcessPlacement
from claude_conductor.errors import AgentError
from claude_conductor.settings import AgentSettings, ConductorSettings
from helpers import git, make_repo

HOME = Path("/srv/conductor")
WS = HOME / "workspaces" / "t1"
TEMP = Path("/tmp/ccd-0123abcd")
COMMON = Path("/src/project/.git")


def _conf() -> Confinement:
    return Confinement(
        workspace=WS,
        temp_dir=TEMP,
        protected_paths=(HOME / "config.yaml", HOME / "prefect", Path("/root/.prefect")),
        other_tasks=(HOME / "workspaces", HOME / "agents"),
    )


def _argv(conf: Confinement, existing: dict[Path, bool]) -> list[str]:
    return bubblewrap_argv(
        "/usr/bin/bwrap",
        conf,
        ["/bin/sh", "-c", "make test"],
        existing=existing,
        git_metadata=(COMMON,),
    )


def _mounts(argv: list[str]) -> list[tuple[str, ...]]:
    """The mount options in order, each with its operands."""
    operands = {"--ro-bind": 2, "--bind": 2, "--ro-bind-try": 2, "--tmpfs": 1, "--remount-ro": 1}
    found, index = [], 0
    while index < len(argv):
        count = operands.get(argv[index])
        if count is None:
            index += 1
            continue
        found.append(tuple(argv[index : index + 1 + count]))
        index += 1 + count
    return found


EXISTING = {
    Path("/tmp"): True,
    Path("/run"): True,
    HOME / "workspaces": True,
    HOME / "agents": True,
    HOME / "config.yaml": False,
    HOME / "prefect": True,
}


def test_everything_is_read_only_but_the_worktree_and_the_temp_folder() -> None:
    argv = _argv(_conf(), EXISTING)
    assert argv[:5] == ["/usr/bin/bwrap", "--ro-bind", "/", "/", "--dev"]
    assert argv[-4:] == ["--", "/bin/sh", "-c", "make test"]
    mounts = _mounts(argv)
    writable = [m[1] for m in mounts if m[0] == "--bind"]
    assert writable == [str(WS), str(TEMP)]
    # The git metadata is readable, and the worktree's pointer to it cannot be changed.
    assert ("--ro-bind", str(COMMON), str(COMMON)) in mounts
    assert mounts.index(("--ro-bind-try", f"{WS}/.git", f"{WS}/.git")) > mounts.index(
        ("--bind", str(WS), str(WS))
    )


def test_control_files_other_tasks_tmp_and_run_are_hidden_before_the_worktree_is_shown() -> None:
    mounts = _mounts(_argv(_conf(), EXISTING))
    shown_at = mounts.index(("--bind", str(WS), str(WS)))
    hidden = {m[1]: i for i, m in enumerate(mounts) if m[0] == "--tmpfs"}
    assert set(hidden) == {
        "/tmp",
        "/run",
        f"{HOME}/workspaces",
        f"{HOME}/agents",
        f"{HOME}/prefect",
    }
    assert all(index < shown_at for index in hidden.values())  # the worktree sits in one
    # A file is hidden by an unreadable one (bound without devices), folders by empty ones,
    # made read-only once everything is mounted in them.
    assert ("--ro-bind", "/dev/null", f"{HOME}/config.yaml") in mounts
    remounted = [m[1] for m in mounts if m[0] == "--remount-ro"]
    assert set(remounted) == set(hidden)
    assert min(mounts.index(("--remount-ro", p)) for p in remounted) > shown_at
    # ~/.prefect does not exist here: nothing to hide, and no mount point to make.
    assert "/root/.prefect" not in _argv(_conf(), EXISTING)


def test_a_protected_path_inside_something_shown_is_hidden_after_it() -> None:
    conf = _conf().model_copy(
        update={"protected_paths": (COMMON / "conductor-secret",), "other_tasks": ()}
    )
    mounts = _mounts(_argv(conf, {Path("/tmp"): True, COMMON / "conductor-secret": False}))
    assert mounts.index(("--ro-bind", "/dev/null", f"{COMMON}/conductor-secret")) > mounts.index(
        ("--ro-bind", str(COMMON), str(COMMON))
    )


def test_own_namespaces_no_network_no_capabilities_and_tied_to_the_engine() -> None:
    argv = _argv(_conf(), EXISTING)
    head = argv[: argv.index("--")]
    for flag in (
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--new-session",
        "--die-with-parent",
    ):
        assert flag in head
    assert head[head.index("--proc") + 1] == "/proc"
    assert head[head.index("--cap-drop") + 1] == "ALL"
    assert head[head.index("--chdir") + 1] == str(WS)


def test_git_dirs_of_a_linked_worktree_is_the_common_dir(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    git(repo, "worktree", "add", "-q", str(tmp_path / "wt"), "-b", "side")
    assert git_dirs(tmp_path / "wt") == ((repo / ".git").resolve(),)
    assert git_dirs(repo) == ()  # its .git is inside it
    assert git_dirs(tmp_path) == ()


def test_paths_to_hide_are_those_that_exist(tmp_path: Path) -> None:
    settings = ConductorSettings(home=tmp_path / "home")
    (settings.home / "prefect").mkdir(parents=True)
    (settings.home / "config.yaml").write_text("x: 1\n")
    conf = confinement_for(settings.workspaces_dir / "t1", TEMP, settings, {"HOME": "/nowhere"})
    found = paths_to_hide(conf)
    home = settings.home.resolve()
    assert found[home / "prefect"] is True and found[home / "config.yaml"] is False
    assert home / "results" not in found and Path("/nowhere/.prefect") not in found
    assert found[Path("/tmp")] is True


def test_the_engines_prefect_home_is_protected(tmp_path: Path) -> None:
    settings = ConductorSettings(home=tmp_path / "home")
    env = {"HOME": "/home/me", "PREFECT_HOME": "/var/prefect"}
    conf = confinement_for(tmp_path / "ws", TEMP, settings, env)
    assert {Path("/home/me/.prefect"), Path("/var/prefect")} <= set(conf.protected_paths)


# --------------------------------------------------------------------------- the plan


def _request(workspace: Path, role: str = "shell", path: str = "/usr/bin:/bin") -> LaunchRequest:
    return LaunchRequest("t1", role, ["/bin/sh", "-c", "true"], {"PATH": path}, workspace, 5)  # type: ignore[arg-type]


def _settings(tmp_path: Path, **agent: object) -> ConductorSettings:
    return ConductorSettings(home=tmp_path / "home", agent=AgentSettings(**agent))  # type: ignore[arg-type]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="bubblewrap is Linux only")
def test_shell_work_is_planned_in_bubblewrap_with_its_own_temp_folder(tmp_path: Path) -> None:
    if not Path("/usr/bin/bwrap").exists():
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap)")
    plan = ProcessPlacement(_settings(tmp_path)).plan(_request(tmp_path))
    assert Path(plan.argv[0]).name == "bwrap"
    assert plan.argv[-3:] == ["/bin/sh", "-c", "true"]
    temp = Path(plan.env["TMPDIR"])
    assert temp.name.startswith("ccd-") and stat.S_IMODE(temp.stat().st_mode) == 0o700
    assert ["--bind", str(temp), str(temp)] == plan.argv[
        plan.argv.index(str(temp)) - 1 : plan.argv.index(str(temp)) + 2
    ]
    asyncio.run(plan.run_cleanup())
    assert not temp.exists()


def test_the_agent_and_unsandboxed_shell_work_run_as_asked(tmp_path: Path) -> None:
    agent = ProcessPlacement(_settings(tmp_path)).plan(_request(tmp_path, role="agent"))
    off = ProcessPlacement(_settings(tmp_path, sandbox=False)).plan(_request(tmp_path))
    for plan in (agent, off):
        assert plan.argv == ["/bin/sh", "-c", "true"] and plan.env == {"PATH": "/usr/bin:/bin"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="bubblewrap is Linux only")
def test_missing_bubblewrap_is_the_agents_one_clear_error(tmp_path: Path) -> None:
    before = set(Path("/tmp").glob("ccd-*"))
    with pytest.raises(AgentError) as caught:
        ProcessPlacement(_settings(tmp_path)).plan(_request(tmp_path, path=str(tmp_path)))
    message = str(caught.value)
    assert "bwrap is not on the agent's PATH" in message
    assert "apt-get install bubblewrap`" in message
    assert "CONDUCTOR_AGENT__SANDBOX=false" in message and "verify" in message
    assert set(Path("/tmp").glob("ccd-*")) == before  # nothing half-created
