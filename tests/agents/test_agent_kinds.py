"""Task kinds: prompt templates and tool policies."""

from __future__ import annotations

import pytest

from claude_conductor.agents.kinds import policy_for, render_prompt
from claude_conductor.errors import InputError
from claude_conductor.models import TaskSpec


@pytest.mark.parametrize("kind", ["code_review", "analysis"])
def test_read_only_kinds(kind: str) -> None:
    policy = policy_for(TaskSpec(kind=kind, prompt="look"))
    assert policy.permission_mode == "default"
    assert policy.read_only
    assert "Read" in policy.allowed_tools
    assert not {"Write", "Edit", "MultiEdit", "NotebookEdit", "Bash"} & set(policy.allowed_tools)


@pytest.mark.parametrize("kind", ["refactor", "test_generation", "generic"])
def test_editing_kinds(kind: str) -> None:
    policy = policy_for(TaskSpec(kind=kind, prompt="change"))
    assert policy.permission_mode == "acceptEdits"
    assert not policy.read_only
    assert {"Read", "Write", "Edit", "Bash"} <= set(policy.allowed_tools)


def test_overrides() -> None:
    spec = TaskSpec(
        kind="refactor",
        prompt="x",
        permission_mode="bypassPermissions",
        allowed_tools=["Read", "Edit"],
        disallowed_tools=["Edit", "WebFetch"],
    )
    policy = policy_for(spec)
    assert policy.permission_mode == "bypassPermissions"
    assert policy.allowed_tools == ("Read",)  # a disallowed tool is not also allowed
    assert {"Edit", "WebFetch"} <= set(policy.disallowed_tools)


def test_a_review_made_writable_is_not_read_only() -> None:
    spec = TaskSpec(kind="code_review", prompt="x", permission_mode="acceptEdits")
    assert not policy_for(spec).read_only


def test_command_kind_has_no_policy_or_prompt() -> None:
    spec = TaskSpec(kind="command", command="make test")
    with pytest.raises(InputError, match="runs its shell command"):
        policy_for(spec)
    with pytest.raises(InputError):
        render_prompt(spec)


def test_prompt_wraps_the_users_words_verbatim() -> None:
    spec = TaskSpec(
        kind="refactor",
        title="Split the parser",
        prompt="  Split parse() into tokenize() and build(). [script:x]  ",
        files=["src/parser.py", "tests/test_parser.py"],
    )
    prompt = render_prompt(spec)
    assert "Split parse() into tokenize() and build(). [script:x]" in prompt
    assert "Task: Split the parser" in prompt
    assert "- src/parser.py\n- tests/test_parser.py" in prompt
    assert "Keep behaviour unchanged" in prompt


@pytest.mark.parametrize("kind", ["code_review", "analysis"])
def test_review_prompts_say_report_do_not_edit(kind: str) -> None:
    prompt = render_prompt(TaskSpec(kind=kind, prompt="check it"))
    assert "READ-ONLY" in prompt and "do not create, edit or delete files" in prompt
    assert "findings" in prompt


def test_each_kind_has_its_own_instructions() -> None:
    kinds = ["code_review", "analysis", "refactor", "test_generation", "generic"]
    prompts = {render_prompt(TaskSpec(kind=k, prompt="p")) for k in kinds}
    assert len(prompts) == len(kinds)
    assert "tests" in render_prompt(TaskSpec(kind="test_generation", prompt="p"))
