"""What an agent did, and what it changed, as plain data for the task detail page.

The transcript comes from the JSONL file at ``TaskResult.transcript_path`` when it is readable
(standalone tier: same machine), else from the run's logs, where the flow logs every agent
event as ``agent <describe()>``. The diff comes from the ``.patch`` file, else from the
``diff`` block of the markdown report. Pure functions, no Streamlit, no Prefect.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from claude_conductor.client.diffs import diff_from_report, read_patch

__all__ = [
    "FileDiff",
    "TranscriptEntry",
    "diff_from_report",
    "read_patch",
    "split_diff",
    "transcript_from_jsonl",
    "transcript_from_log_messages",
]

EntryKind = Literal["system", "text", "tool", "result", "denied", "log", "other"]

_MAX_BODY_CHARS = 20_000
_AGENT_LOG_PREFIX = "agent "


@dataclass
class TranscriptEntry:
    """One readable step: the agent's text, a tool call with its result, the final result."""

    kind: EntryKind
    title: str
    body: str = ""
    tool_input: dict[str, Any] = field(default_factory=dict)
    output: str | None = None
    is_error: bool = False
    tool_use_id: str = ""


def _clip(text: str, limit: int = _MAX_BODY_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n… ({len(text) - limit} more chars)"


def _one_line(text: str, limit: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _content_text(content: Any) -> str:
    """A tool result's content: a string, or a list of blocks with text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict):
                parts.append(str(block.get("text", "")) if block.get("type") == "text" else "")
            else:
                parts.append(str(block))
        return "\n".join(p for p in parts if p)
    return "" if content is None else json.dumps(content, default=str)


def _tool_target(name: str, tool_input: dict[str, Any]) -> str:
    for key in ("file_path", "path", "command", "pattern", "url", "description"):
        if key in tool_input:
            return f"{name} {_one_line(str(tool_input[key]), 100)}"
    return name


def _events_of_line(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Normalise one JSONL object, either a raw stream-json line of the `claude` CLI or a
    serialised conductor ``AgentEvent``, into zero or more event dicts with a conductor type."""
    kind = obj.get("type")
    if kind in {"init", "text", "tool_use", "tool_result", "permission_denied", "unknown"}:
        return [obj]
    if kind == "system":
        if obj.get("subtype") == "init":
            return [{**obj, "type": "init", "permission_mode": obj.get("permissionMode")}]
        if obj.get("subtype") == "permission_denied":
            return [{"type": "permission_denied", "tool_name": obj.get("tool_name", "")}]
        return []
    if kind in {"assistant", "user"}:
        message = obj.get("message") or {}
        blocks = message.get("content") if isinstance(message, dict) else None
        if isinstance(blocks, str):
            blocks = [{"type": "text", "text": blocks}]
        out: list[dict[str, Any]] = []
        for block in blocks or []:
            if not isinstance(block, dict):
                continue
            btype = block.get("type")
            if btype == "text" and kind == "assistant":
                out.append({"type": "text", "text": block.get("text", "")})
            elif btype == "tool_use":
                out.append(
                    {
                        "type": "tool_use",
                        "id": block.get("id", ""),
                        "name": block.get("name", "?"),
                        "input": block.get("input") or {},
                    }
                )
            elif btype == "tool_result":
                out.append(
                    {
                        "type": "tool_result",
                        "tool_use_id": block.get("tool_use_id", ""),
                        "content": _content_text(block.get("content")),
                        "is_error": bool(block.get("is_error")),
                    }
                )
        return out
    if kind == "result":
        return [obj]
    return [] if kind is None else [{"type": "unknown", "raw_type": str(kind)}]


def _entries(events: Iterable[dict[str, Any]]) -> list[TranscriptEntry]:
    entries: list[TranscriptEntry] = []
    calls: dict[str, TranscriptEntry] = {}
    for ev in events:
        kind = ev.get("type")
        if kind == "init":
            model = ev.get("model") or "?"
            mode = ev.get("permission_mode") or "?"
            tools = ev.get("tools") or []
            entries.append(
                TranscriptEntry(
                    "system",
                    f"Agent started: model {model}, permission mode {mode}",
                    body=f"{len(tools)} tools: " + ", ".join(map(str, tools)) if tools else "",
                )
            )
        elif kind == "text":
            text = str(ev.get("text", ""))
            if text.strip():
                entries.append(TranscriptEntry("text", _one_line(text), body=_clip(text)))
        elif kind == "tool_use":
            name = str(ev.get("name", "?"))
            tool_input = ev.get("input") if isinstance(ev.get("input"), dict) else {}
            entry = TranscriptEntry(
                "tool",
                _tool_target(name, tool_input or {}),
                tool_input=tool_input or {},
                tool_use_id=str(ev.get("id", "")),
            )
            entries.append(entry)
            if entry.tool_use_id:
                calls[entry.tool_use_id] = entry
        elif kind == "tool_result":
            content = _clip(str(ev.get("content", "")))
            is_error = bool(ev.get("is_error"))
            call = calls.get(str(ev.get("tool_use_id", "")))
            if call is not None and call.output is None:
                call.output, call.is_error = content, is_error
            else:
                title = ("Tool error: " if is_error else "Tool result: ") + _one_line(content)
                entries.append(TranscriptEntry("tool", title, output=content, is_error=is_error))
        elif kind == "permission_denied":
            entries.append(
                TranscriptEntry(
                    "denied", f"Permission denied: {ev.get('tool_name') or '?'}", is_error=True
                )
            )
        elif kind == "result":
            cost = float(ev.get("total_cost_usd") or 0.0)
            turns = int(ev.get("num_turns") or 0)
            subtype = str(ev.get("subtype") or "success")
            is_error = bool(ev.get("is_error"))
            entries.append(
                TranscriptEntry(
                    "result",
                    f"Finished: {subtype}{' (error)' if is_error else ''}, "
                    f"{turns} turns, ${cost:.4f}",
                    body=_clip(str(ev.get("result") or "")),
                    is_error=is_error,
                )
            )
        else:
            entries.append(TranscriptEntry("other", f"Event {ev.get('raw_type') or kind or '?'}"))
    return entries


def transcript_from_jsonl(path: str | Path | None) -> list[TranscriptEntry] | None:
    """The transcript from a JSONL file, or None when there is no readable file."""
    if not path:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    events: list[dict[str, Any]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            events.extend(_events_of_line(obj))
    return _entries(events)


def transcript_from_log_messages(messages: Iterable[str]) -> list[TranscriptEntry]:
    """The transcript from run log lines ``agent <describe()>`` (other lines are skipped)."""
    entries: list[TranscriptEntry] = []
    for message in messages:
        if not message.startswith(_AGENT_LOG_PREFIX):
            continue
        line = message[len(_AGENT_LOG_PREFIX) :]
        if line.startswith("says: "):
            entries.append(TranscriptEntry("text", _one_line(line[6:]), body=line[6:]))
        elif line.startswith("uses "):
            entries.append(TranscriptEntry("tool", line[5:]))
        elif line.startswith(("tool result: ", "tool error: ")):
            is_error = line.startswith("tool error: ")
            output = line.split(": ", 1)[1]
            last = entries[-1] if entries else None
            if last is not None and last.kind == "tool" and last.output is None:
                last.output, last.is_error = output, is_error
            else:
                entries.append(TranscriptEntry("tool", line, output=output, is_error=is_error))
        elif line.startswith("started"):
            entries.append(TranscriptEntry("system", "Agent " + line))
        elif line.startswith("finished: "):
            entries.append(TranscriptEntry("result", "Finished: " + line[10:]))
        elif line.startswith("permission denied: "):
            entries.append(TranscriptEntry("denied", line[0].upper() + line[1:], is_error=True))
        else:
            entries.append(TranscriptEntry("log", line))
    return entries


@dataclass(frozen=True)
class FileDiff:
    """One file's part of a unified diff."""

    path: str
    text: str
    insertions: int
    deletions: int
    status: str  # modified, added, deleted, renamed


_DIFF_HEADER = re.compile(r"^diff --git a/(.*?) b/(.*)$")


def split_diff(diff: str) -> list[FileDiff]:
    """Split a ``git diff`` into files, counting added and removed lines of each."""
    files: list[FileDiff] = []
    chunk: list[str] = []

    def flush() -> None:
        if not chunk:
            return
        head = _DIFF_HEADER.match(chunk[0])
        path = head.group(2) if head else chunk[0]
        status = "modified"
        plus = minus = 0
        in_hunk = False
        for line in chunk[1:]:
            if line.startswith("@@"):
                in_hunk = True
            elif not in_hunk:
                if line.startswith("new file mode"):
                    status = "added"
                elif line.startswith("deleted file mode"):
                    status = "deleted"
                elif line.startswith("rename to "):
                    status, path = "renamed", line[len("rename to ") :]
            elif line.startswith("+"):
                plus += 1
            elif line.startswith("-"):
                minus += 1
        files.append(FileDiff(path, "\n".join(chunk) + "\n", plus, minus, status))

    for line in diff.splitlines():
        if line.startswith("diff --git "):
            flush()
            chunk = [line]
        elif chunk:
            chunk.append(line)
        elif line.strip():
            chunk = ["diff --git a/? b/?", line]
    flush()
    return files
