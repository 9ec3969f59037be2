"""The markdown report and the fan-out aggregation, without Prefect."""

from __future__ import annotations

from datetime import UTC, datetime

from claude_conductor.flows.fanout import aggregate, submission_tags
from claude_conductor.flows.report import fanout_rows, task_markdown
from claude_conductor.models import DiffStats, TaskResult, TaskSpec, TaskStatus, VerifyResult


def result(task_id: str, status: TaskStatus, cost: float = 0.01, **kw: object) -> TaskResult:
    return TaskResult(task_id=task_id, status=status, cost_usd=cost, num_turns=2, **kw)  # type: ignore[arg-type]


def test_report_shows_what_a_user_needs() -> None:
    r = result(
        "t-1",
        TaskStatus.FAILED,
        title="Add greet",
        branch="conductor/t-1",
        files_changed=["greet.py"],
        diff_stats=DiffStats(files=1, insertions=3, deletions=0),
        error="verify command 'pytest' exited with code 1",
        verify=VerifyResult(command="pytest", exit_code=1, output_tail="1 failed"),
        permission_denials=[{"tool_name": "Write"}],
    )
    md = task_markdown(r, diff="+def greet(name):\n")
    for part in (
        "Add greet",
        "**failed**",
        "conductor/t-1",
        "`greet.py`",
        "+3",
        "$0.0100",
        "exited with code 1",
        "1 failed",
        "```diff",
        "+def greet",
        "`Write`",
    ):
        assert part in md


def test_long_diff_is_truncated() -> None:
    md = task_markdown(result("t-1", TaskStatus.SUCCEEDED), diff="x" * 100_000)
    assert "(truncated)" in md and len(md) < 70_000


def test_aggregate_keeps_every_subtask_and_fails_when_one_fails() -> None:
    parent = TaskSpec(id="p-1", prompt="fan", subtasks=[TaskSpec(prompt="a")])
    subs = [
        result("p-1-s1", TaskStatus.SUCCEEDED, files_changed=["a.py"]),
        result("p-1-s2", TaskStatus.FAILED, error="boom"),
        result("p-1-s3", TaskStatus.SUCCEEDED, files_changed=["b.py", "a.py"]),
    ]
    report = aggregate(parent, subs, datetime.now(UTC))
    assert report.status is TaskStatus.FAILED
    assert "1 of 3" in (report.error or "") and "p-1-s2" in (report.error or "")
    assert report.cost_usd == 0.03 and report.num_turns == 6
    assert report.files_changed == ["a.py", "b.py"]
    assert [s.task_id for s in report.subtasks] == ["p-1-s1", "p-1-s2", "p-1-s3"]
    rows = fanout_rows(subs)
    assert [row["status"] for row in rows] == ["succeeded", "failed", "succeeded"]


def test_submission_tags() -> None:
    spec = TaskSpec(
        id="t-1", prompt="x", kind="analysis", priority=8, tags=["team-a"], parent_id="p-1"
    )
    assert submission_tags(spec) == [
        "conductor",
        "task:t-1",
        "kind:analysis",
        "priority:8",
        "team-a",
        "parent:p-1",
    ]
