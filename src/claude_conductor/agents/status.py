"""Decide how an agent run ended, from its ``result`` line first and its exit code last.

The CLI's exit code is not the status: a refused write exits 0 with ``permission_denials``,
an API error exits 1 with ``subtype: success`` and ``is_error: true``. This module is pure.
"""

from __future__ import annotations

import signal
from typing import Any

from claude_conductor.models import ResultEvent, TaskStatus

__all__ = ["api_error_message", "decide_status", "describe_denials"]

_API_ERRORS: dict[int, str] = {
    400: "the model API rejected the request as invalid (HTTP 400)",
    401: "authentication failed: the API key was rejected (check ANTHROPIC_API_KEY)",
    403: "the API key is not allowed to do this (HTTP 403; check the key's permissions)",
    404: "the model API does not know the requested model (HTTP 404; check the task's model)",
    413: "the request was too large for the model API (HTTP 413)",
    429: "rate limited by the model API (HTTP 429): too many requests or tokens for this "
    "key; run fewer agents at once or retry later",
    500: "the model API had an internal error (HTTP 500); retry later",
    529: "the model API is overloaded (HTTP 529); retry later",
}


def api_error_message(status: int, detail: str = "") -> str:
    """A readable message for an API error status, with the CLI's own text appended."""
    if status in _API_ERRORS:
        message = _API_ERRORS[status]
    elif 500 <= status < 600:
        message = f"the model API failed with a server error (HTTP {status}); retry later"
    else:
        message = f"the model API refused the request (HTTP {status})"
    detail = " ".join(detail.split())[:300]
    return f"{message} [{detail}]" if detail else message


_PATH_KEYS = ("file_path", "notebook_path", "path")


def _tool_target(denial: dict[str, Any]) -> str:
    name = str(denial.get("tool_name") or "?")
    tool_input = denial.get("tool_input")
    if isinstance(tool_input, dict):
        for key in ("file_path", "notebook_path", "command", "path", "url"):
            if tool_input.get(key):
                value = " ".join(str(tool_input[key]).split())
                if len(value) > 80:
                    # A long path keeps its end (the file name); a command its start.
                    value = "…" + value[-79:] if key in _PATH_KEYS else value[:79] + "…"
                return f"{name}({value})"
    return name


def describe_denials(denials: list[dict[str, Any]]) -> str:
    """``Write(/w/greet.py), Bash(rm -rf build)`` for the first few denials."""
    shown = [_tool_target(d) for d in denials[:5]]
    more = f" and {len(denials) - 5} more" if len(denials) > 5 else ""
    return ", ".join(shown) + more


def _signal_name(exit_code: int) -> str:
    try:
        return signal.Signals(-exit_code).name
    except ValueError:
        return f"signal {-exit_code}"


def _no_result(exit_code: int | None, stderr_tail: str) -> str:
    last = next((ln.strip() for ln in reversed(stderr_tail.splitlines()) if ln.strip()), "")
    hint = f"; stderr: {last[:300]}" if last else ""
    if exit_code == -signal.SIGKILL:
        return f"the agent was killed (possibly out of memory) before it reported a result{hint}"
    if exit_code is not None and exit_code < 0:
        return (
            f"the agent was killed by {_signal_name(exit_code)} before it reported a result{hint}"
        )
    return f"the agent exited with code {exit_code} without reporting a result{hint}"


def _failed_result(result: ResultEvent, max_turns: int | None, max_budget_usd: float | None) -> str:
    if result.api_error_status is not None:
        return api_error_message(result.api_error_status, result.result)
    if result.subtype == "error_max_turns":
        limit = f" ({max_turns})" if max_turns is not None else ""
        return (
            f"stopped after reaching the turn limit max_turns{limit} after "
            f"{result.num_turns} turns; raise max_turns or split the task"
        )
    if result.subtype == "error_max_budget_usd":
        limit = f" (${max_budget_usd:g})" if max_budget_usd is not None else ""
        return (
            f"stopped after reaching the budget limit max_budget_usd{limit}, having spent "
            f"${result.total_cost_usd:.4f}; raise max_budget_usd or narrow the task"
        )
    detail = " ".join(result.result.split())[:300]
    if result.subtype == "error_during_execution":
        return "the agent failed during execution" + (f": {detail}" if detail else "")
    return f"the agent reported an error ({result.subtype})" + (f": {detail}" if detail else "")


def decide_status(
    result: ResultEvent | None,
    *,
    exit_code: int | None,
    timed_out: bool = False,
    cancelled: bool = False,
    stalled: bool = False,
    timeout_seconds: float | None = None,
    inactivity_timeout_seconds: float | None = None,
    max_turns: int | None = None,
    max_budget_usd: float | None = None,
    stderr_tail: str = "",
) -> tuple[TaskStatus, str | None]:
    """The task status and, unless it succeeded, a readable reason.

    Order: cancelled, stalled (inactivity watchdog), timed out (wall clock), no result line
    (crashed or killed), an error result (API error, turn or budget limit), refused tools
    (``needs_attention``), else succeeded.
    """
    if cancelled:
        return TaskStatus.CANCELLED, "cancelled before the agent finished"
    if stalled:
        after = f" for {inactivity_timeout_seconds:g}s" if inactivity_timeout_seconds else ""
        return TaskStatus.TIMED_OUT, (
            f"the agent produced no output{after} and was stopped by the inactivity watchdog "
            "(agent.inactivity_timeout_seconds); the model API or a tool may have hung"
        )
    if timed_out:
        limit = f" of {timeout_seconds:g}s" if timeout_seconds else ""
        return TaskStatus.TIMED_OUT, (
            f"the agent ran past the task's wall-clock timeout{limit} and was stopped; "
            "raise timeout_seconds or split the task"
        )
    if result is None:
        return TaskStatus.FAILED, _no_result(exit_code, stderr_tail)
    if result.is_error or result.subtype != "success":
        return TaskStatus.FAILED, _failed_result(result, max_turns, max_budget_usd)
    if result.permission_denials:
        count = len(result.permission_denials)
        return TaskStatus.NEEDS_ATTENTION, (
            f"the permission mode refused {count} tool use{'s' if count != 1 else ''}: "
            f"{describe_denials(result.permission_denials)}; review the result, or rerun with "
            "a kind or permission_mode that allows it"
        )
    return TaskStatus.SUCCEEDED, None
