"""The public Python API without a server: what the package exports, that importing it stays
cheap, and bad input through every new door (one InputError naming the field, before anything
is created)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import claude_conductor
from claude_conductor import (
    InputError,
    agent_task,
    arun_agent_task,
    asubmit_agent_task,
    run_agent_task,
    submit_agent_task,
)
from helpers import make_repo


def test_every_public_name_resolves_and_is_documented() -> None:
    assert "run_agent_task" in claude_conductor.__all__
    for name in claude_conductor.__all__:
        value = getattr(claude_conductor, name)
        if name != "__version__":
            assert (value.__doc__ or "").strip(), f"claude_conductor.{name} has no docstring"
    assert set(claude_conductor.__all__) <= set(dir(claude_conductor))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = claude_conductor.nope  # type: ignore[attr-defined]


def test_importing_the_package_and_the_cli_does_not_load_prefect() -> None:
    code = (
        "import sys, claude_conductor, claude_conductor.cli.main\n"
        "from claude_conductor import agent_task, run_agent_task, TaskSpec\n"
        "print('prefect' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = make_repo(tmp_path / "project")
    monkeypatch.chdir(path)
    return path


@pytest.mark.parametrize("door", [run_agent_task, submit_agent_task])
@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"kind": "nope", "prompt": "x"}, "kind", ["'nope'", "code_review", "test_generation"]),
        ({"prompt": "x", "max_turns": "ten"}, "max_turns", ["'ten'", "whole number"]),
        ({"prompt": "x", "max_budget_usd": -1.0}, "max_budget_usd", ["-1.0", "greater than 0"]),
        ({"promt": "x"}, "promt", ["did you mean 'prompt'?"]),
        ({"kind": "refactor"}, "prompt", ["needs a prompt"]),
        ({"prompt": "x", "repo": "no/such/dir"}, "repo", ["does not exist", "git repository"]),
    ],
)
def test_bad_input_raises_one_clear_input_error_at_once(
    repo: Path, door: object, fields: dict[str, object], field: str, words: list[str]
) -> None:
    """Raised by the call itself, in sync code and async code alike: no Prefect API is
    configured here, so anything that got further would fail differently."""
    with pytest.raises(InputError) as caught:
        door(**fields)  # type: ignore[operator]
    error = caught.value
    assert error.field == field
    assert error.exit_code == 2
    name = door.__name__  # type: ignore[attr-defined]
    assert str(error).startswith(f"{name}: field {field!r}" if field != "repo" else f"{name}: repo")
    for word in words:
        assert word in str(error)
    assert "\n" not in str(error)


async def test_async_doors_raise_the_same_errors(repo: Path) -> None:
    with pytest.raises(InputError, match=r"run_agent_task: field 'kind' = 'nope'"):
        await arun_agent_task(kind="nope", prompt="x")
    with pytest.raises(InputError, match=r"submit_agent_task: field 'retries' = True"):
        await asubmit_agent_task(prompt="x", retries=True)
    with pytest.raises(InputError, match=r"did you mean 'timeout_seconds'"):
        run_agent_task(prompt="x", timeout_second=5)  # in async code too, before awaiting


def test_run_agent_task_refuses_subtasks_and_says_what_to_do(repo: Path) -> None:
    with pytest.raises(InputError, match=r"asyncio\.gather") as caught:
        run_agent_task(prompt="split", subtasks=[{"prompt": "a"}])
    assert caught.value.field == "subtasks"


def test_agent_task_checks_its_fields_when_decorating(repo: Path) -> None:
    with pytest.raises(InputError, match=r"@agent_task on .*: field 'kind' = 'nope'") as caught:

        @agent_task(kind="nope")
        def bad(path: str) -> str:
            return path

    assert caught.value.field == "kind"
    with pytest.raises(InputError, match="did you mean 'max_budget_usd'"):
        agent_task(max_budget=1.0)(lambda: "x")
    with pytest.raises(InputError, match="field 'prompt' cannot be fixed in the decorator"):
        agent_task(prompt="fixed")(lambda: "x")
    with pytest.raises(InputError, match="field 'id' cannot be fixed"):
        agent_task(id="same-for-every-call")(lambda: "x")


def test_agent_task_keeps_the_function_and_checks_what_it_returns(repo: Path) -> None:
    @agent_task(kind="test_generation", max_budget_usd=1.0)
    def tests_for(path: str) -> str:
        """Tests for one file."""
        return f"Write pytest tests for {path}"

    assert tests_for.__name__ == "tests_for" and tests_for.__doc__ == "Tests for one file."
    assert tests_for.fields == {"kind": "test_generation", "max_budget_usd": 1.0}

    @agent_task(kind="analysis")
    def not_text() -> str:
        return 42  # type: ignore[return-value]

    with pytest.raises(InputError, match="returned int; return the task's prompt as a string"):
        not_text()

    @agent_task(kind="analysis", repo="elsewhere")
    def missing_repo() -> str:
        return "Explain"

    with pytest.raises(InputError, match="does not exist") as caught:
        missing_repo()
    assert caught.value.field == "repo"


async def test_agent_task_in_async_code_is_awaitable_and_checks_too(repo: Path) -> None:
    @agent_task(kind="analysis")
    async def explain(topic: str) -> str:
        return ""  # empty prompt: refused like a task file without one

    call = explain("cache")
    with pytest.raises(InputError, match=r"field 'prompt'.*kind 'analysis' needs a prompt"):
        await call
