"""The submit form's validation (the task-file model) and the dashboard's launch command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from claude_conductor.dashboard import forms, launch
from claude_conductor.errors import InputError
from claude_conductor.settings import ConductorSettings


def _form(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "kind": "refactor",
        "title": "",
        "repo": str(tmp_path),
        "ref": "",
        "prompt": "Do it",
        "command": "",
        "priority": 5,
        "timeout_seconds": 900.0,
        "max_turns": 30,
        "max_budget_usd": 2.0,
        "verify": "",
        "model": "",
    }
    values.update(changes)
    return values


def test_a_valid_form_gives_a_spec_and_empty_text_fields_are_unset(tmp_path: Path) -> None:
    check = forms.check_form(_form(tmp_path, verify="pytest -q", command="ignored"))
    assert check.ok and check.spec is not None
    assert check.spec.kind == "refactor" and check.spec.verify == "pytest -q"
    assert check.spec.ref is None and check.spec.model is None and check.spec.command is None
    assert check.warnings == {}


def test_form_errors_name_their_field_with_the_task_file_messages(tmp_path: Path) -> None:
    check = forms.check_form(_form(tmp_path, prompt="  ", priority=0, max_turns=-1, repo=""))
    assert not check.ok
    assert set(check.errors) == {"prompt", "priority", "max_turns", "repo"}
    assert "needs a prompt" in check.errors["prompt"]
    assert "from 1 (lowest) to 10" in check.errors["priority"]
    assert "greater than 0" in check.errors["max_turns"]
    assert "repository path or a git URL" in check.errors["repo"]


def test_a_command_task_needs_its_command(tmp_path: Path) -> None:
    check = forms.check_form(_form(tmp_path, kind="command", prompt="", command=""))
    assert set(check.errors) == {"command"}
    assert forms.check_form(_form(tmp_path, kind="command", prompt="", command="make")).ok


def test_a_repo_that_is_not_here_is_a_warning_not_an_error(tmp_path: Path) -> None:
    check = forms.check_form(_form(tmp_path, repo=str(tmp_path / "nope")))
    assert check.ok and "not a folder on this machine" in check.warnings["repo"]
    assert forms.check_form(_form(tmp_path, repo="https://example.com/x.git")).warnings == {}


def test_yaml_documents_are_checked_like_task_files(tmp_path: Path) -> None:
    good = forms.check_yaml(f"kind: analysis\nrepo: {tmp_path}\nprompt: Count modules\n")
    assert good.ok and good.spec is not None and good.spec.kind == "analysis"
    bad = forms.check_yaml("kind: magic\nprompt: x\ncolour: blue\n", "task.yaml")
    assert set(bad.errors) == {"kind", "colour"}
    assert "allowed: one of code_review" in bad.errors["kind"]
    assert "unknown field 'colour'" in bad.errors["colour"]
    assert "invalid YAML at line 2" in forms.check_yaml("kind: [\n").errors["yaml"]
    assert "YAML mapping" in forms.check_yaml("- a\n- b\n").errors["yaml"]
    assert "is empty" in forms.check_yaml("  ").errors["yaml"]


def test_export_leaves_secrets_out(tmp_path: Path) -> None:
    settings = ConductorSettings(
        home=tmp_path, dashboard={"password": "hunter2"}, server={"auth_string": "u:p4ss"}
    )
    text = forms.export_settings_yaml(settings)
    assert "hunter2" not in text and "p4ss" not in text
    data = yaml.safe_load(text)
    assert "password" not in data["dashboard"] and "home" not in data


def test_argv_binds_to_loopback_without_a_password(tmp_path: Path) -> None:
    settings = ConductorSettings(home=tmp_path, dashboard={"host": "0.0.0.0", "port": 9123})
    argv = launch.dashboard_argv(settings, python="/py")
    assert argv[:5] == ["/py", "-m", "streamlit", "run", str(launch.app_path())]
    assert argv[argv.index("--server.address") + 1] == "127.0.0.1"
    assert argv[argv.index("--server.port") + 1] == "9123"
    assert argv[argv.index("--server.headless") + 1] == "true"
    assert argv[argv.index("--browser.gatherUsageStats") + 1] == "false"
    assert launch.app_path().is_file()
    with pytest.raises(InputError, match="CONDUCTOR_DASHBOARD_PASSWORD"):
        launch.dashboard_argv(settings, host="0.0.0.0")
    assert launch.dashboard_argv(settings, host="localhost")[6] == "localhost"


def test_argv_uses_the_host_when_a_password_is_set(tmp_path: Path) -> None:
    settings = ConductorSettings(home=tmp_path, dashboard={"host": "0.0.0.0", "password": "s3cret"})
    argv = launch.dashboard_argv(settings, port=8600)
    assert argv[argv.index("--server.address") + 1] == "0.0.0.0"
    assert argv[argv.index("--server.port") + 1] == "8600"
    assert "s3cret" not in " ".join(argv)
    env = launch.dashboard_env(settings, base={"PATH": "/bin", "CONDUCTOR_X": "1"})
    assert env["CONDUCTOR_DASHBOARD_PASSWORD"] == "s3cret"
    assert env["CONDUCTOR_API_URL"] == settings.server.url
    assert env["CONDUCTOR_HOME"] == str(tmp_path)
    assert env["PATH"] == "/bin"


def test_env_drops_a_stale_password_variable(tmp_path: Path) -> None:
    settings = ConductorSettings(home=tmp_path, dashboard={"password": None})
    env = launch.dashboard_env(settings, base={"CONDUCTOR_DASHBOARD_PASSWORD": "old"})
    assert "CONDUCTOR_DASHBOARD_PASSWORD" not in env


def test_cli_prints_the_command_and_refuses_an_open_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from claude_conductor.cli._common import invoke
    from claude_conductor.cli.main import app

    monkeypatch.setenv("CONDUCTOR_HOME", str(tmp_path))
    monkeypatch.delenv("CONDUCTOR_DASHBOARD_PASSWORD", raising=False)
    assert invoke(app, ["dashboard", "--print-command", "--port", "8777"]) == 0
    out = capsys.readouterr().out
    assert "streamlit run" in out and "--server.address 127.0.0.1" in out and "8777" in out
    assert invoke(app, ["dashboard", "--host", "0.0.0.0", "--print-command"]) == 2
    assert "CONDUCTOR_DASHBOARD_PASSWORD" in capsys.readouterr().err


def test_public_settings_masks_every_secret(tmp_path: Path) -> None:
    settings = ConductorSettings(
        home=tmp_path,
        dashboard={"password": "hunter2"},
        server={"auth_string": "u:p4ss", "api_url": "https://bob:t0ps3cret@prefect.example/api"},
        agent={"extra_env": {"ANTHROPIC_API_KEY": "sk-ant-xyz", "LANG": "C.UTF-8"}},
    )
    text = repr(settings.public_dict())
    for secret in ("hunter2", "p4ss", "t0ps3cret", "sk-ant-xyz"):
        assert secret not in text
    data = settings.public_dict()
    assert data["agent"]["extra_env"] == {"ANTHROPIC_API_KEY": "********", "LANG": "C.UTF-8"}
    assert data["server"]["api_url"] == "https://********@prefect.example/api"


def test_tile_formats_stay_short() -> None:
    from claude_conductor.dashboard.components import fmt_cost, fmt_duration, fmt_tokens

    assert [fmt_cost(v) for v in (0, 0.0012, 0.1734, 12.345, 1234.5, None)] == [
        "$0", "$0.0012", "$0.173", "$12.35", "$1,234", "-",
    ]  # fmt: skip
    assert [fmt_tokens(v) for v in (800, 51200, 3_400_000)] == ["800", "51.2k", "3.4M"]
    assert [fmt_duration(v) for v in (8.44, 42.5, 125, 3720, None)] == [
        "8.4 s", "42 s", "2m 05s", "1h 02m", "-",
    ]  # fmt: skip
