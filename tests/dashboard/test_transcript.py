"""Transcripts and diffs for the detail page, from files, logs and reports."""

from __future__ import annotations

import json
from pathlib import Path

from claude_conductor.dashboard.transcript import (
    diff_from_report,
    split_diff,
    transcript_from_jsonl,
    transcript_from_log_messages,
)
from claude_conductor.flows.report import task_markdown
from claude_conductor.models import (
    AssistantText,
    ResultEvent,
    TaskResult,
    TaskStatus,
    ToolResult,
    ToolUse,
)

PATCH = """\
diff --git a/a.py b/a.py
index 1..2 100644
--- a/a.py
+++ b/a.py
@@ -1,2 +1,2 @@
-x = 1
+x = 2
 y = 3
diff --git a/old.txt b/new.txt
similarity index 90%
rename from old.txt
rename to new.txt
diff --git a/gone.py b/gone.py
deleted file mode 100644
--- a/gone.py
+++ /dev/null
@@ -1,2 +0,0 @@
-print(1)
-print(2)
"""


def test_split_diff_counts_lines_per_file_and_detects_renames_and_deletes() -> None:
    files = split_diff(PATCH)
    assert [(f.path, f.status, f.insertions, f.deletions) for f in files] == [
        ("a.py", "modified", 1, 1),
        ("new.txt", "renamed", 0, 0),
        ("gone.py", "deleted", 0, 2),
    ]
    assert files[0].text.startswith("diff --git a/a.py b/a.py\n")
    assert "+x = 2" in files[0].text
    assert split_diff("") == []


def test_the_report_diff_block_round_trips() -> None:
    result = TaskResult(task_id="t-1", status=TaskStatus.SUCCEEDED, summary="```py\nx\n```")
    report = task_markdown(result, PATCH)
    assert diff_from_report(report) == PATCH
    assert diff_from_report(task_markdown(result, "")) == ""


def test_transcript_from_serialised_agent_events(tmp_path: Path) -> None:
    # Conductor's own AgentEvent models written one per line also read back.
    events = [
        AssistantText(text="Looking."),
        ToolUse(id="1", name="Read", input={"file_path": "a.py"}),
        ToolResult(tool_use_id="1", content="boom", is_error=True),
        ResultEvent(subtype="error_max_turns", is_error=True, num_turns=3, total_cost_usd=0.2),
    ]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(e.model_dump_json() for e in events) + "\nnot json\n\n")
    entries = transcript_from_jsonl(path)
    assert entries is not None
    assert [e.kind for e in entries] == ["text", "tool", "result"]
    assert (entries[1].title, entries[1].output, entries[1].is_error) == ("Read a.py", "boom", True)
    assert entries[2].title == "Finished: error_max_turns (error), 3 turns, $0.2000"
    assert entries[2].is_error


def test_raw_cli_lines_with_unknown_types_do_not_break_the_transcript(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    lines = [
        {"type": "system", "subtype": "hook_started"},
        {"type": "assistant", "message": {"content": [{"type": "thinking", "thinking": "hm"}]}},
        {"type": "stream_event", "event": {}},
        {"type": "assistant", "message": {"content": [{"type": "text", "text": "Done."}]}},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines))
    entries = transcript_from_jsonl(path)
    assert entries is not None
    assert [(e.kind, e.title) for e in entries] == [
        ("other", "Event stream_event"),
        ("text", "Done."),
    ]
    assert transcript_from_jsonl(tmp_path / "missing.jsonl") is None
    assert transcript_from_jsonl(None) is None


def test_transcript_from_agent_log_lines_skips_other_logs() -> None:
    entries = transcript_from_log_messages(
        [
            "task t-1 (refactor) on /srv",
            "agent says: Hi",
            "agent uses Bash pytest -q",
            "agent tool error: exit 1",
            "agent permission denied: Write",
            "agent finished: success, 1 turns, $0.0100",
        ]
    )
    assert [e.kind for e in entries] == ["text", "tool", "denied", "result"]
    assert (entries[1].title, entries[1].output, entries[1].is_error) == (
        "Bash pytest -q",
        "exit 1",
        True,
    )
