"""Task files: every problem gives one clear line naming the file, the field and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from claude_conductor.errors import TaskFileError
from claude_conductor.models import TaskSpec
from claude_conductor.taskfile import load_task_file


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "task.yaml"
    path.write_text(text)
    return path


def test_loads_a_full_task_and_resolves_repo_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "proj").mkdir()
    path = write(
        tmp_path,
        "kind: refactor\ntitle: Greet\nprompt: add greet()\nrepo: ./proj\nref: main\n"
        "files: [main.py]\ntimeout_seconds: 60\nmax_turns: 5\nmax_budget_usd: 0.5\n"
        "verify: pytest -q\npriority: 9\ntags: [x]\n",
    )
    spec = load_task_file(path)
    assert spec.kind == "refactor"
    assert spec.repo == str(tmp_path / "proj")
    assert spec.branch == f"conductor/{spec.id}"
    assert spec.priority == 9 and spec.verify == "pytest -q"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kind: nonsense\nprompt: x\n", ["'kind'", "'nonsense'", "code_review"]),
        ("prompt: x\ntimeout_seconds: -5\n", ["'timeout_seconds'", "-5", "greater than 0"]),
        ("prompt: x\npriority: 11\n", ["'priority'", "11", "1 (lowest) to 10"]),
        ("prompt: x\ncolour: red\n", ["unknown field 'colour'", "remove it"]),
        ("kind: command\n", ["'command'", "needs a command"]),
        ("kind: refactor\n", ["'prompt'", "needs a prompt"]),
        ("prompt: [unclosed\n", ["invalid YAML", "line"]),
        ("- just\n- a list\n", ["YAML mapping"]),
        ("", ["is empty"]),
    ],
)
def test_bad_task_files_name_field_value_and_fix(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(TaskFileError) as info:
        load_task_file(path)
    message = str(info.value)
    assert message.startswith(str(path))
    assert "\n" not in message
    for part in expected:
        assert part in message
    assert info.value.exit_code == 2


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TaskFileError, match="no such file"):
        load_task_file(tmp_path / "nope.yaml")


def test_subtasks_inherit_repo_ref_and_limits() -> None:
    spec = TaskSpec(
        id="parent-1",
        prompt="fan out",
        repo="/r",
        ref="dev",
        timeout_seconds=60,
        subtasks=[TaskSpec(prompt="a"), TaskSpec(prompt="b", repo="/other", id="own-id")],
    )
    first, second = spec.expanded_subtasks()
    assert (first.id, first.repo, first.ref, first.timeout_seconds) == (
        "parent-1-s1",
        "/r",
        "dev",
        60,
    )
    assert first.parent_id == "parent-1"
    assert (second.id, second.repo) == ("own-id", "/other")


def test_task_id_must_be_branch_safe() -> None:
    with pytest.raises(ValueError, match="names a git branch"):
        TaskSpec(id="Bad Id!", prompt="x")
