"""Parse the CLI's ``--output-format stream-json`` lines into typed agent events.

The edge where raw JSON becomes ``AgentEvent``s: unknown keys are ignored, unknown event
types become ``UnknownEvent``, and a malformed line is an ``UnknownEvent`` too, never an
exception. One line can hold several events (an assistant message with several blocks).
"""

from __future__ import annotations

import json
from typing import Any

from claude_conductor.models import (
    AgentEvent,
    AssistantText,
    PermissionDenied,
    ResultEvent,
    SystemInit,
    ToolResult,
    ToolUse,
    UnknownEvent,
)

__all__ = ["parse_line", "parse_result"]

_MAX_KEPT_LINE_CHARS = 2000


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _float(value: Any) -> float:
    try:
        return float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text_of(content: Any) -> str:
    """A tool result's content: a string, or the text of a list of blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            str(block.get("text", ""))
            for block in content
            if isinstance(block, dict) and block.get("type") == "text"
        ]
        return "\n".join(part for part in parts if part)
    return "" if content is None else json.dumps(content, default=str)


def _main_model(model_usage: dict[str, Any]) -> str | None:
    """The model that cost the most (the main one; others are helpers such as Haiku)."""
    best: tuple[float, str] | None = None
    for name, usage in model_usage.items():
        cost = _float(_dict(usage).get("costUSD"))
        if best is None or cost > best[0]:
            best = (cost, name)
    return best[1] if best else None


def parse_result(data: dict[str, Any]) -> ResultEvent:
    """The ``result`` line: usage summed (input + cache creation + cache read), the model
    taken from ``modelUsage``."""
    usage = _dict(data.get("usage"))
    denials = data.get("permission_denials")
    api_status = data.get("api_error_status")
    return ResultEvent(
        subtype=str(data.get("subtype") or "success"),
        is_error=bool(data.get("is_error")),
        result=data.get("result") if isinstance(data.get("result"), str) else "",
        session_id=_str_or_none(data.get("session_id")),
        num_turns=_int(data.get("num_turns")),
        duration_ms=_int(data.get("duration_ms")),
        total_cost_usd=_float(data.get("total_cost_usd")),
        input_tokens=_int(usage.get("input_tokens"))
        + _int(usage.get("cache_creation_input_tokens"))
        + _int(usage.get("cache_read_input_tokens")),
        output_tokens=_int(usage.get("output_tokens")),
        permission_denials=[d for d in denials if isinstance(d, dict)]
        if isinstance(denials, list)
        else [],
        api_error_status=api_status if isinstance(api_status, int) else None,
        terminal_reason=_str_or_none(data.get("terminal_reason")),
        model=_main_model(_dict(data.get("modelUsage"))),
    )


def _system(data: dict[str, Any]) -> list[AgentEvent]:
    subtype = data.get("subtype")
    if subtype == "init":
        tools = data.get("tools")
        return [
            SystemInit(
                session_id=_str_or_none(data.get("session_id")),
                model=_str_or_none(data.get("model")),
                permission_mode=_str_or_none(data.get("permissionMode")),
                tools=[str(t) for t in tools] if isinstance(tools, list) else [],
                cwd=_str_or_none(data.get("cwd")),
            )
        ]
    if subtype == "permission_denied":
        detail = {k: v for k, v in data.items() if k in ("tool_use_id", "message", "tool_input")}
        return [PermissionDenied(tool_name=str(data.get("tool_name") or ""), detail=detail)]
    return [UnknownEvent(raw_type=f"system/{subtype}", data=data)]


def _assistant(data: dict[str, Any]) -> list[AgentEvent]:
    events: list[AgentEvent] = []
    for block in _dict(data.get("message")).get("content") or []:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            events.append(AssistantText(text=str(block.get("text") or "")))
        elif kind == "tool_use":
            events.append(
                ToolUse(
                    id=str(block.get("id") or ""),
                    name=str(block.get("name") or ""),
                    input=_dict(block.get("input")),
                )
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue  # the model's private reasoning: not part of the transcript
        else:
            events.append(UnknownEvent(raw_type=f"assistant/{kind}", data=block))
    return events


def _user(data: dict[str, Any]) -> list[AgentEvent]:
    content = _dict(data.get("message")).get("content")
    events: list[AgentEvent] = []
    for block in content if isinstance(content, list) else []:
        if isinstance(block, dict) and block.get("type") == "tool_result":
            events.append(
                ToolResult(
                    tool_use_id=str(block.get("tool_use_id") or ""),
                    content=_text_of(block.get("content")),
                    is_error=bool(block.get("is_error")),
                )
            )
    return events


def parse_line(line: str | bytes) -> list[AgentEvent]:
    """The events on one stream-json line (none for a blank line); never raises."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    stripped = line.strip()
    if not stripped:
        return []
    try:
        data = json.loads(stripped)
    except ValueError:
        return [UnknownEvent(raw_type="malformed", data={"line": stripped[:_MAX_KEPT_LINE_CHARS]})]
    if not isinstance(data, dict):
        return [UnknownEvent(raw_type="malformed", data={"line": stripped[:_MAX_KEPT_LINE_CHARS]})]
    kind = data.get("type")
    try:
        if kind == "system":
            return _system(data)
        if kind == "assistant":
            return _assistant(data)
        if kind == "user":
            return _user(data)
        if kind == "result":
            return [parse_result(data)]
    except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        return [UnknownEvent(raw_type=f"invalid/{kind}", data={"error": str(exc), **data})]
    return [UnknownEvent(raw_type=str(kind or "missing"), data=data)]
