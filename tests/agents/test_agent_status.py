"""Every branch of decide_status: the status comes from the result, not the exit code."""

from __future__ import annotations

from typing import Any

import pytest

from claude_conductor.agents.status import decide_status
from claude_conductor.models import ResultEvent, TaskStatus


def result(**fields: Any) -> ResultEvent:
    base: dict[str, Any] = {
        "subtype": "success",
        "is_error": False,
        "result": "ok",
        "num_turns": 3,
        "total_cost_usd": 0.05,
    }
    return ResultEvent(**{**base, **fields})


def test_success() -> None:
    assert decide_status(result(), exit_code=0) == (TaskStatus.SUCCEEDED, None)


def test_success_even_when_the_cli_was_stopped_after_its_result() -> None:
    # A CLI that lingers after `result` is stopped by us: the result still decides.
    assert decide_status(result(), exit_code=-15) == (TaskStatus.SUCCEEDED, None)


def test_permission_denials_need_attention_though_exit_code_is_zero() -> None:
    denials = [
        {"tool_name": "Write", "tool_input": {"file_path": "/w/greet.py", "content": "x"}},
        {"tool_name": "Bash", "tool_input": {"command": "rm -rf build"}},
    ]
    status, error = decide_status(result(permission_denials=denials), exit_code=0)
    assert status is TaskStatus.NEEDS_ATTENTION
    assert error is not None
    assert "refused 2 tool uses" in error
    assert "Write(/w/greet.py)" in error and "Bash(rm -rf build)" in error


def test_a_long_denied_path_keeps_its_file_name() -> None:
    # Issue 12: the message cut long paths from the end, losing the file name.
    deep = "/tmp/pytest-of-root/pytest-7/test_review_cannot_edit0/home/worktrees/project"
    denials = [
        {"tool_name": "Write", "tool_input": {"file_path": f"{deep}/src/pkg/greeting_helper.py"}},
        {"tool_name": "Bash", "tool_input": {"command": "echo " + "x" * 200 + " > out.txt"}},
    ]
    _, error = decide_status(result(permission_denials=denials), exit_code=0)
    assert error is not None
    assert "greeting_helper.py)" in error
    assert "Bash(echo xxx" in error


def test_many_denials_are_summarised() -> None:
    denials = [{"tool_name": "Write", "tool_input": {"file_path": f"/w/{i}"}} for i in range(8)]
    _, error = decide_status(result(permission_denials=denials), exit_code=0)
    assert error is not None and "and 3 more" in error


@pytest.mark.parametrize(
    ("status_code", "expected"),
    [
        (401, "authentication failed: the API key was rejected (check ANTHROPIC_API_KEY)"),
        (429, "rate limited by the model API"),
        (529, "the model API is overloaded"),
        (500, "internal error (HTTP 500)"),
        (503, "server error (HTTP 503)"),
        (400, "invalid (HTTP 400)"),
        (404, "does not know the requested model"),
        (418, "refused the request (HTTP 418)"),
    ],
)
def test_api_errors_fail_with_a_distinct_message(status_code: int, expected: str) -> None:
    failed = result(is_error=True, api_error_status=status_code, result="API Error: details")
    status, error = decide_status(failed, exit_code=1)
    assert status is TaskStatus.FAILED
    assert error is not None
    assert expected in error
    assert "API Error: details" in error  # the CLI's own words are kept


def test_api_error_with_success_subtype_still_fails() -> None:
    # The CLI reports API errors as subtype "success" with is_error true (see FACTS.md).
    status, _ = decide_status(result(is_error=True, api_error_status=529), exit_code=0)
    assert status is TaskStatus.FAILED


def test_max_turns_names_the_limit() -> None:
    status, error = decide_status(
        result(subtype="error_max_turns", is_error=True, num_turns=3), exit_code=1, max_turns=2
    )
    assert status is TaskStatus.FAILED
    assert error is not None and "max_turns (2)" in error and "turn limit" in error


def test_max_budget_names_the_limit() -> None:
    status, error = decide_status(
        result(subtype="error_max_budget_usd", is_error=True, total_cost_usd=0.0123),
        exit_code=1,
        max_budget_usd=0.01,
    )
    assert status is TaskStatus.FAILED
    assert error is not None and "max_budget_usd ($0.01)" in error and "$0.0123" in error


def test_error_during_execution_and_unknown_error_subtypes() -> None:
    status, error = decide_status(
        result(subtype="error_during_execution", is_error=True, result="tool crashed"),
        exit_code=1,
    )
    assert (
        status is TaskStatus.FAILED and error == "the agent failed during execution: tool crashed"
    )
    status, error = decide_status(result(subtype="error_new_kind", result=""), exit_code=0)
    assert status is TaskStatus.FAILED
    assert error == "the agent reported an error (error_new_kind)"


def test_no_result_and_sigkill_looks_like_oom() -> None:
    status, error = decide_status(None, exit_code=-9, stderr_tail="")
    assert status is TaskStatus.FAILED
    assert error is not None and "killed (possibly out of memory)" in error


def test_no_result_other_signal_and_plain_exit() -> None:
    _, error = decide_status(None, exit_code=-11)
    assert error is not None and "SIGSEGV" in error
    _, error = decide_status(None, exit_code=2, stderr_tail="boot\nError: bad flag --nope\n\n")
    assert error is not None and "exited with code 2" in error and "Error: bad flag --nope" in error


def test_wall_clock_timeout() -> None:
    status, error = decide_status(None, exit_code=-15, timed_out=True, timeout_seconds=90)
    assert status is TaskStatus.TIMED_OUT
    assert error is not None and "wall-clock timeout of 90s" in error


def test_stall_names_the_inactivity_watchdog() -> None:
    status, error = decide_status(None, exit_code=-15, stalled=True, inactivity_timeout_seconds=300)
    assert status is TaskStatus.TIMED_OUT
    assert error is not None and "inactivity watchdog" in error and "300s" in error


def test_cancelled_wins_over_everything() -> None:
    status, error = decide_status(result(), exit_code=0, cancelled=True, timed_out=True)
    assert status is TaskStatus.CANCELLED and error is not None


def test_stall_before_wall_clock() -> None:
    status, error = decide_status(None, exit_code=-9, stalled=True, timed_out=True)
    assert status is TaskStatus.TIMED_OUT and error is not None and "inactivity" in error
