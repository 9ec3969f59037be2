"""The boundary's pure parts: argv and settings passed to the CLI, the sandbox check, the
scrub of the agent's files. The real CLI enforcing them: tests/integration/test_confinement.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from claude_conductor.agents.argv import build_argv, build_env
from claude_conductor.agents.confinement import (
    Confinement,
    check_sandbox_available,
    cli_settings,
    confinement_for,
    scrub_agent_files,
)
from claude_conductor.errors import AgentError
from claude_conductor.models import TaskSpec
from claude_conductor.redaction import Redactor
from claude_conductor.settings import AgentSettings, ConductorSettings
from claude_conductor.system.temp_dirs import new_temp_dir

CLAUDE = Path("/opt/claude")


def _settings(tmp_path: Path, **agent: Any) -> ConductorSettings:
    return ConductorSettings(home=tmp_path / "home", agent=AgentSettings(**agent))


def _conf(tmp_path: Path, **agent: Any) -> Confinement:
    settings = _settings(tmp_path, **agent)
    return confinement_for(settings.workspaces_dir / "t1", Path("/tmp/ccd-0123abcd"), settings)


def _option(argv: list[str], name: str) -> str:
    head = argv[: argv.index("--")]
    return head[head.index(name) + 1]


def test_editing_tools_are_scoped_to_the_worktree_and_temp_folder(tmp_path: Path) -> None:
    conf = _conf(tmp_path)
    spec = TaskSpec(kind="refactor", prompt="tidy", allowed_tools=["Read", "Write", "Bash"])
    argv = build_argv(spec, CLAUDE, _settings(tmp_path), confinement=conf)
    allowed = _option(argv, "--allowedTools").split(",")
    home = (tmp_path / "home").resolve()
    assert allowed == [
        "Read",
        f"Edit(/{home}/workspaces/t1/**)",
        "Edit(//tmp/ccd-0123abcd/**)",
        "Bash",
    ]
    assert allowed[1].startswith("Edit(//")  # `//` is an absolute path in a rule
    assert {"WebFetch", "WebSearch"} <= set(_option(argv, "--disallowedTools").split(","))
    assert "--no-session-persistence" in argv
    # The repository under work brings no settings, hooks or MCP servers of its own.
    assert _option(argv, "--setting-sources") == "user"
    assert "--strict-mcp-config" in argv


def test_cli_settings_confine_writes_deny_control_files_and_sandbox_bash(
    tmp_path: Path,
) -> None:
    conf = _conf(tmp_path, sandbox_allowed_domains=["pypi.org"])
    argv = build_argv(TaskSpec(prompt="x"), CLAUDE, _settings(tmp_path), confinement=conf)
    settings = json.loads(_option(argv, "--settings"))
    home = (tmp_path / "home").resolve()
    permissions = settings["permissions"]
    assert permissions["blockWritesOutsideWorkingDirectories"] is True
    assert permissions["additionalDirectories"] == ["/tmp/ccd-0123abcd"]
    for rule in (
        "Read(//proc/**)",
        f"Read(/{home}/config.yaml)",
        f"Read(/{home}/prefect/**)",
        f"Read(/{home}/run/**)",
    ):
        assert rule in permissions["deny"]
    sandbox = settings["sandbox"]
    assert sandbox["enabled"] is True and sandbox["failIfUnavailable"] is True
    assert sandbox["allowUnsandboxedCommands"] is False
    assert sandbox["autoAllowBashIfSandboxed"] is True
    assert str(home / "prefect") in sandbox["filesystem"]["denyRead"]
    assert sandbox["network"] == {"allowedDomains": ["pypi.org"], "allowLocalBinding": False}


def test_read_only_kinds_get_no_auto_allowed_bash_and_a_read_only_worktree(
    tmp_path: Path,
) -> None:
    conf = _conf(tmp_path)
    settings = cli_settings(conf, read_only=True)
    assert settings["sandbox"]["autoAllowBashIfSandboxed"] is False
    assert settings["sandbox"]["filesystem"]["denyWrite"] == [str(conf.workspace)]


def test_sandbox_off_keeps_the_file_tool_rules(tmp_path: Path) -> None:
    conf = _conf(tmp_path, sandbox=False)
    settings = cli_settings(conf, read_only=False)
    assert settings["sandbox"] == {"enabled": False}
    assert settings["permissions"]["blockWritesOutsideWorkingDirectories"] is True


def test_sandbox_setting_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONDUCTOR_HOME", str(tmp_path))
    assert ConductorSettings().agent_sandbox is True  # standalone: on unless turned off
    monkeypatch.setenv("CONDUCTOR_AGENT__SANDBOX", "false")
    assert ConductorSettings().agent_sandbox is False
    # Inside the docker tier's agent containers the container is the boundary (bubblewrap
    # cannot run there), unless asked for.
    monkeypatch.setenv("CONDUCTOR_TIER", "docker")
    monkeypatch.delenv("CONDUCTOR_AGENT__SANDBOX")
    assert ConductorSettings().agent_sandbox is False
    monkeypatch.setenv("CONDUCTOR_AGENT__SANDBOX", "true")
    assert ConductorSettings().agent_sandbox is True


def test_agent_temp_folder_is_its_own_and_short(tmp_path: Path) -> None:
    first, second = new_temp_dir(), new_temp_dir()
    assert first != second and not first.exists()
    # The CLI keeps sockets in <temp>/claude-<uid>: past ~30 bytes it uses a shared folder.
    assert len(str(first)) <= 20 or not Path("/tmp").is_dir()
    conf = _conf(tmp_path)
    env = build_env(
        _settings(tmp_path),
        tmp_path / "cfg",
        {"CLAUDE_CODE_TMPDIR": "/tmp"},
        temp_dir=conf.temp_dir,
    )
    assert env["CLAUDE_CODE_TMPDIR"] == str(conf.temp_dir)
    assert "CLAUDE_CODE_TMPDIR" not in build_env(
        _settings(tmp_path), tmp_path / "cfg", {"CLAUDE_CODE_TMPDIR": "/tmp"}
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="bubblewrap is Linux only")
def test_missing_bubblewrap_is_one_clear_error_naming_the_fix(tmp_path: Path) -> None:
    conf = _conf(tmp_path)
    with pytest.raises(AgentError) as caught:
        check_sandbox_available(conf, {"PATH": str(tmp_path)})
    message = str(caught.value)
    assert "bwrap and socat" in message
    assert "apt-get install bubblewrap socat" in message
    assert "CONDUCTOR_AGENT__SANDBOX=false" in message
    check_sandbox_available(_conf(tmp_path, sandbox=False), {"PATH": str(tmp_path)})


def test_scrub_removes_session_records_and_redacts_the_rest(tmp_path: Path) -> None:
    key = "sk-scripted-secret-0123456789"
    config_dir = tmp_path / "cfg"
    session = config_dir / "projects" / "-w" / "s.jsonl"
    session.parent.mkdir(parents=True)
    session.write_text(f'{{"text": "key={key}"}}\n')
    state = config_dir / ".claude.json"
    state.write_text(f'{{"last": "{key}", "n": 1}}\n')
    clean = config_dir / "settings.json"
    clean.write_text("{}\n")

    changed = scrub_agent_files(config_dir, Redactor({"ANTHROPIC_API_KEY": key}))

    assert not (config_dir / "projects").exists()
    assert state.read_text() == '{"last": "***", "n": 1}\n'
    assert clean.read_text() == "{}\n"
    assert set(changed) == {session, state}
    assert scrub_agent_files(tmp_path / "missing", Redactor({})) == []
