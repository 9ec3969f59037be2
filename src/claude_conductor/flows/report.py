"""Reports a person reads: a task's markdown report and a fan-out's table. Pure functions."""

from __future__ import annotations

from typing import Any

from claude_conductor.models import TaskResult

__all__ = ["MAX_DIFF_CHARS", "fanout_rows", "task_markdown"]

MAX_DIFF_CHARS = 60_000

_ICONS = {
    "succeeded": "✅",
    "failed": "❌",
    "timed_out": "⏱️",
    "cancelled": "🚫",
    "needs_attention": "⚠️",
}


def task_markdown(result: TaskResult, diff: str = "") -> str:
    """The task's report: what happened, where the change is, what it cost."""
    icon = _ICONS.get(result.status.value, "")
    stats = result.diff_stats
    lines = [
        f"# {icon} {result.title or result.task_id}",
        "",
        "| | |",
        "|---|---|",
        f"| Task | `{result.task_id}` ({result.kind}) |",
        f"| Status | **{result.status.value}** |",
        f"| Repository | `{result.repo}` |",
        f"| Branch | `{result.branch or '-'}` |",
        f"| Commits | `{(result.base_commit or '-')[:10]}` → `{(result.head_commit or '-')[:10]}` |",
        f"| Files changed | {stats.files} (+{stats.insertions} -{stats.deletions}) |",
        f"| Cost | ${result.cost_usd:.4f} |",
        f"| Tokens | {result.input_tokens:,} in / {result.output_tokens:,} out |",
        f"| Turns | {result.num_turns} |",
        f"| Duration | {result.duration_seconds:.1f} s |",
    ]
    if result.session_id:
        lines.append(f"| Session | `{result.session_id}` |")
    if result.error:
        lines += ["", f"**Error:** {result.error}"]
    if result.summary:
        lines += ["", "## Summary", "", result.summary.strip()]
    if result.files_changed:
        lines += ["", "## Files", ""] + [f"- `{path}`" for path in result.files_changed]
    if result.permission_denials:
        lines += ["", "## Permission denials", ""]
        for denial in result.permission_denials:
            lines.append(f"- `{denial.get('tool_name', '?')}`")
    if result.verify is not None:
        v = result.verify
        lines += [
            "",
            "## Verify",
            "",
            f"`{v.command}` → exit code **{v.exit_code}**"
            + (" (timed out)" if v.timed_out else ""),
            "",
            "```",
            v.output_tail.strip()[-4000:],
            "```",
        ]
    if diff:
        shown = diff if len(diff) <= MAX_DIFF_CHARS else diff[:MAX_DIFF_CHARS] + "\n… (truncated)"
        lines += ["", "## Diff", "", "```diff", shown.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def fanout_rows(results: list[TaskResult]) -> list[dict[str, Any]]:
    """One table row per subtask, in order."""
    return [
        {
            "task": r.task_id,
            "title": r.title,
            "status": r.status.value,
            "branch": r.branch or "",
            "files": len(r.files_changed),
            "cost_usd": round(r.cost_usd, 4),
            "turns": r.num_turns,
            "duration_s": round(r.duration_seconds, 1),
            "error": r.error or "",
        }
        for r in results
    ]
