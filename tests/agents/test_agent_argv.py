"""build_argv / build_env / find_claude / redact: pure, nothing is spawned."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from claude_conductor.agents.argv import (
    MAX_ARGV_PROMPT_BYTES,
    build_argv,
    build_env,
    find_claude,
    prompt_on_stdin,
    redact,
)
from claude_conductor.errors import AgentError
from claude_conductor.models import TaskSpec
from claude_conductor.settings import AgentSettings, ConductorSettings

CLAUDE = Path("/opt/claude")


def settings(tmp_path: Path, **agent: Any) -> ConductorSettings:
    return ConductorSettings(home=tmp_path, agent=AgentSettings(**agent))


def option(argv: list[str], name: str) -> str | None:
    """The value after ``name`` (before the ``--`` that starts the prompt)."""
    head = argv[: argv.index("--")] if "--" in argv else argv
    return head[head.index(name) + 1] if name in head else None


def test_headless_stream_json_with_limits(tmp_path: Path) -> None:
    spec = TaskSpec(kind="refactor", prompt="tidy up", max_turns=7, max_budget_usd=1.5)
    argv = build_argv(spec, CLAUDE, settings(tmp_path), session_id="0b9c7c3e-1111-4a1a-9d6e-1e2f")
    assert argv[0] == "/opt/claude"
    assert "--print" in argv and "--verbose" in argv
    assert option(argv, "--output-format") == "stream-json"
    assert option(argv, "--max-turns") == "7"
    assert option(argv, "--max-budget-usd") == "1.5"
    assert option(argv, "--permission-mode") == "acceptEdits"
    assert option(argv, "--session-id") == "0b9c7c3e-1111-4a1a-9d6e-1e2f"
    allowed = (option(argv, "--allowedTools") or "").split(",")
    assert {"Write", "Edit", "Bash", "Read"} <= set(allowed)
    assert "EnterWorktree" in (option(argv, "--disallowedTools") or "")
    assert option(argv, "--model") is None


def test_prompt_is_last_after_double_dash(tmp_path: Path) -> None:
    spec = TaskSpec(kind="generic", prompt="--help is not an option here")
    argv = build_argv(spec, CLAUDE, settings(tmp_path))
    assert argv[-2] == "--"
    assert argv[-1].endswith("Instructions:\n--help is not an option here")


def test_read_only_kinds_use_default_mode_and_read_tools(tmp_path: Path) -> None:
    for kind in ("code_review", "analysis"):
        argv = build_argv(TaskSpec(kind=kind, prompt="look"), CLAUDE, settings(tmp_path))
        assert option(argv, "--permission-mode") == "default"
        allowed = (option(argv, "--allowedTools") or "").split(",")
        assert "Read" in allowed and "Grep" in allowed
        assert not {"Write", "Edit", "MultiEdit", "Bash"} & set(allowed)
        assert all(not t.startswith("Bash") or t.endswith(":*)") for t in allowed)


def test_task_overrides_win_over_kind_defaults(tmp_path: Path) -> None:
    spec = TaskSpec(
        kind="code_review",
        prompt="look",
        permission_mode="plan",
        allowed_tools=["Read", "Bash(pytest:*)"],
        disallowed_tools=["WebFetch"],
        model="sonnet",
        max_turns=None,
        max_budget_usd=None,
    )
    argv = build_argv(spec, CLAUDE, settings(tmp_path, default_model="opus"))
    assert option(argv, "--permission-mode") == "plan"
    assert option(argv, "--allowedTools") == "Read,Bash(pytest:*)"
    assert "WebFetch" in (option(argv, "--disallowedTools") or "").split(",")
    assert option(argv, "--model") == "sonnet"
    assert "--max-turns" not in argv and "--max-budget-usd" not in argv


def test_default_model_from_settings(tmp_path: Path) -> None:
    argv = build_argv(TaskSpec(prompt="x"), CLAUDE, settings(tmp_path, default_model="haiku"))
    assert option(argv, "--model") == "haiku"


def test_huge_prompt_goes_to_stdin(tmp_path: Path) -> None:
    spec = TaskSpec(prompt="y" * (MAX_ARGV_PROMPT_BYTES + 1))
    argv = build_argv(spec, CLAUDE, settings(tmp_path))
    assert "--" not in argv
    assert all(len(arg) < MAX_ARGV_PROMPT_BYTES for arg in argv)
    assert prompt_on_stdin(spec.prompt) and not prompt_on_stdin("short")


def test_command_kind_has_no_agent(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="kind 'command'"):
        build_argv(TaskSpec(kind="command", command="pytest -q"), CLAUDE, settings(tmp_path))


def test_build_env_passes_api_settings_and_drops_the_rest(tmp_path: Path) -> None:
    base = {
        "PATH": "/usr/bin",
        "HOME": "/home/me",
        "ANTHROPIC_API_KEY": "sk-ant-api03-secret",
        "ANTHROPIC_AUTH_TOKEN": "tok-secret-value",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9999",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "PREFECT_API_AUTH_STRING": "admin:pass",
        "AWS_REGION": "eu-west-1",
        "CLAUDE_CODE_USE_BEDROCK": "1",
        "CONDUCTOR_HOME": "/srv/conductor",
        "CLAUDECODE": "1",
        "CLAUDE_CONFIG_DIR": "/home/me/.claude",
    }
    config_dir = tmp_path / "agent-1"
    env = build_env(settings(tmp_path, extra_env={"FOO": "bar"}), config_dir, base)
    for name in (
        "PATH",
        "HOME",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "CLAUDE_CODE_MAX_RETRIES",
        "AWS_REGION",
    ):
        assert env[name] == base[name]
    assert "PREFECT_API_AUTH_STRING" not in env and "CONDUCTOR_HOME" not in env
    assert "CLAUDECODE" not in env  # would make the CLI think it runs nested in itself
    assert env["CLAUDE_CONFIG_DIR"] == str(config_dir)
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert env["IS_SANDBOX"] == "1"
    assert env["FOO"] == "bar"


def test_cloud_credentials_pass_only_for_the_provider_in_use(tmp_path: Path) -> None:
    base = {
        "AWS_SECRET_ACCESS_KEY": "aws-secret-value",
        "GOOGLE_APPLICATION_CREDENTIALS": "/home/me/gcp.json",
        "CLOUD_ML_REGION": "us-east5",
    }
    assert not set(base) & set(build_env(settings(tmp_path), tmp_path, base))
    bedrock = build_env(settings(tmp_path), tmp_path, {**base, "CLAUDE_CODE_USE_BEDROCK": "1"})
    assert bedrock["AWS_SECRET_ACCESS_KEY"] == "aws-secret-value"
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in bedrock
    vertex = build_env(settings(tmp_path), tmp_path, {**base, "CLAUDE_CODE_USE_VERTEX": "true"})
    assert vertex["GOOGLE_APPLICATION_CREDENTIALS"] == "/home/me/gcp.json"
    assert vertex["CLOUD_ML_REGION"] == "us-east5" and "AWS_SECRET_ACCESS_KEY" not in vertex
    off = build_env(settings(tmp_path), tmp_path, {**base, "CLAUDE_CODE_USE_BEDROCK": "0"})
    assert "AWS_SECRET_ACCESS_KEY" not in off


def test_build_env_has_a_path_even_from_an_empty_env(tmp_path: Path) -> None:
    assert build_env(settings(tmp_path), tmp_path, {})["PATH"] == os.defpath


def test_find_claude_bundled(tmp_path: Path) -> None:
    path = find_claude(settings(tmp_path))
    assert path.name == "claude" and os.access(path, os.X_OK)


def test_find_claude_configured_missing_says_how_to_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "claude"
    with pytest.raises(AgentError, match="CONDUCTOR_CLAUDE_PATH") as info:
        find_claude(settings(tmp_path, claude_path=missing))
    assert str(missing) in str(info.value)


def test_find_claude_configured(tmp_path: Path) -> None:
    fake = tmp_path / "claude"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert find_claude(settings(tmp_path, claude_path=fake)) == fake


def test_redact_masks_secret_env_values() -> None:
    env = {
        "ANTHROPIC_API_KEY": "sk-scripted-0123456789",
        "GITHUB_TOKEN": "ghp_abcdefghijk",
        "DB_PASSWORD": "hunter2hunter2",
        "MY_AUTH": "short",  # under 8 characters: left alone (too likely to be a word)
        "HOME": "/home/someone-long-enough",  # not a secret's name
    }
    text = (
        "key=sk-scripted-0123456789 gh=ghp_abcdefghijk pw=hunter2hunter2 auth=short "
        "home=/home/someone-long-enough raw=sk-ant-api03-AbCdEf_123456789"
    )
    masked = redact(text, env)
    for secret in ("sk-scripted-0123456789", "ghp_abcdefghijk", "hunter2hunter2", "sk-ant-api03"):
        assert secret not in masked
    assert "auth=short" in masked and "home=/home/someone-long-enough" in masked
    assert masked.count("***") == 4


def test_redact_longest_secret_first() -> None:
    env = {"A_KEY": "abcdefgh", "B_KEY": "abcdefgh-and-more"}
    assert redact("x abcdefgh-and-more y abcdefgh", env) == "x *** y ***"
