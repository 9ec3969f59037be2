"""Parsing the CLI's stream-json lines (shapes copied from claude 2.1.330 output)."""

from __future__ import annotations

import json
from typing import Any

from claude_conductor.agents.stream import parse_line
from claude_conductor.models import (
    AssistantText,
    PermissionDenied,
    ResultEvent,
    SystemInit,
    ToolResult,
    ToolUse,
    UnknownEvent,
)


def line(data: dict[str, Any]) -> str:
    return json.dumps(data) + "\n"


INIT = {
    "type": "system",
    "subtype": "init",
    "cwd": "/w/repo",
    "session_id": "6cb40741-a57b-4418-88c2-f536ec9044ae",
    "tools": ["Bash", "Edit", "Read", "Write"],
    "model": "claude-opus-5-5",
    "permissionMode": "acceptEdits",
    "apiKeySource": "ANTHROPIC_API_KEY",
    "claude_code_version": "2.1.330",
    "some_future_field": {"nested": True},
}

RESULT = {
    "type": "result",
    "subtype": "success",
    "is_error": False,
    "duration_ms": 342,
    "num_turns": 2,
    "result": "done",
    "session_id": "6cb40741-a57b-4418-88c2-f536ec9044ae",
    "total_cost_usd": 0.0012,
    "usage": {
        "input_tokens": 100,
        "cache_creation_input_tokens": 20,
        "cache_read_input_tokens": 300,
        "output_tokens": 40,
        "server_tool_use": {"web_search_requests": 0},
    },
    "modelUsage": {
        "claude-haiku-4-5": {"inputTokens": 10, "costUSD": 0.0001},
        "claude-opus-5-5": {"inputTokens": 100, "outputTokens": 40, "costUSD": 0.0011},
    },
    "permission_denials": [],
    "terminal_reason": "completed",
    "api_error_status": None,
    "ttft_ms": 192,
}


def test_system_init() -> None:
    [event] = parse_line(line(INIT))
    assert event == SystemInit(
        session_id="6cb40741-a57b-4418-88c2-f536ec9044ae",
        model="claude-opus-5-5",
        permission_mode="acceptEdits",
        tools=["Bash", "Edit", "Read", "Write"],
        cwd="/w/repo",
    )


def test_assistant_message_with_several_blocks_yields_several_events() -> None:
    data = {
        "type": "assistant",
        "message": {
            "id": "msg_1",
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "private", "signature": "x"},
                {"type": "text", "text": "I'll write it."},
                {
                    "type": "tool_use",
                    "id": "toolu_01",
                    "name": "Write",
                    "input": {"file_path": "/w/a.txt", "content": "hi\n"},
                },
                {"type": "server_tool_use", "id": "srv_1", "name": "web_search"},
            ],
        },
        "session_id": "s",
    }
    events = parse_line(line(data))
    assert events[0] == AssistantText(text="I'll write it.")
    assert events[1] == ToolUse(
        id="toolu_01", name="Write", input={"file_path": "/w/a.txt", "content": "hi\n"}
    )
    assert isinstance(events[2], UnknownEvent)
    assert events[2].raw_type == "assistant/server_tool_use"
    assert len(events) == 3  # thinking is not part of the transcript


def test_user_tool_results_as_string_and_as_blocks() -> None:
    data = {
        "type": "user",
        "message": {
            "role": "user",
            "content": [
                {"tool_use_id": "toolu_01", "type": "tool_result", "content": "File created"},
                {
                    "tool_use_id": "toolu_02",
                    "type": "tool_result",
                    "is_error": True,
                    "content": [{"type": "text", "text": "line 1"}, {"type": "text", "text": "2"}],
                },
            ],
        },
        "tool_use_result": {"type": "create"},
    }
    assert parse_line(line(data)) == [
        ToolResult(tool_use_id="toolu_01", content="File created", is_error=False),
        ToolResult(tool_use_id="toolu_02", content="line 1\n2", is_error=True),
    ]


def test_permission_denied() -> None:
    data = {
        "type": "system",
        "subtype": "permission_denied",
        "tool_name": "Write",
        "tool_use_id": "toolu_01",
        "message": "Claude requested permissions to write to /w/x.txt, "
        "but you haven't granted it yet.",
        "uuid": "u",
    }
    [event] = parse_line(line(data))
    assert isinstance(event, PermissionDenied)
    assert event.tool_name == "Write"
    assert event.detail["tool_use_id"] == "toolu_01"
    assert "haven't granted" in event.detail["message"]


def test_result_sums_cache_tokens_and_picks_the_main_model() -> None:
    [event] = parse_line(line(RESULT))
    assert isinstance(event, ResultEvent)
    assert event.input_tokens == 100 + 20 + 300
    assert event.output_tokens == 40
    assert event.total_cost_usd == 0.0012
    assert event.model == "claude-opus-5-5"
    assert (event.num_turns, event.duration_ms, event.session_id) == (2, 342, RESULT["session_id"])
    assert event.terminal_reason == "completed"


def test_error_results_keep_status_and_tolerate_nulls() -> None:
    api_error = {
        **RESULT,
        "is_error": True,
        "result": "Failed to authenticate. API Error: 401",
        "api_error_status": 401,
        "total_cost_usd": None,
        "usage": None,
        "modelUsage": None,
    }
    [event] = parse_line(line(api_error))
    assert isinstance(event, ResultEvent)
    assert (event.is_error, event.api_error_status, event.total_cost_usd) == (True, 401, 0.0)
    assert event.model is None

    max_turns = {**RESULT, "subtype": "error_max_turns", "is_error": True, "result": None}
    [event] = parse_line(line(max_turns))
    assert isinstance(event, ResultEvent)
    assert (event.subtype, event.result) == ("error_max_turns", "")


def test_permission_denials_on_the_result() -> None:
    denial = {"tool_name": "Write", "tool_use_id": "t", "tool_input": {"file_path": "/w/x"}}
    [event] = parse_line(line({**RESULT, "permission_denials": [denial, "junk"]}))
    assert isinstance(event, ResultEvent)
    assert event.permission_denials == [denial]


def test_unknown_types_are_kept_not_fatal() -> None:
    [event] = parse_line(line({"type": "stream_event", "event": {"x": 1}}))
    assert event == UnknownEvent(
        raw_type="stream_event", data={"type": "stream_event", "event": {"x": 1}}
    )
    [event] = parse_line(line({"type": "system", "subtype": "compact_boundary"}))
    assert isinstance(event, UnknownEvent) and event.raw_type == "system/compact_boundary"
    [event] = parse_line(line({"no_type": True}))
    assert isinstance(event, UnknownEvent) and event.raw_type == "missing"


def test_malformed_lines_never_raise() -> None:
    for bad in ("{not json", "[1, 2]", '"just a string"', "\x00\xff garbage", '{"type": "resu'):
        [event] = parse_line(bad)
        assert isinstance(event, UnknownEvent)
        assert event.raw_type == "malformed"
    [event] = parse_line(b"\xff\xfe{bad bytes")
    assert isinstance(event, UnknownEvent)


def test_wrongly_typed_fields_degrade_to_unknown_or_defaults() -> None:
    weird_init = {"type": "system", "subtype": "init", "tools": "Bash", "session_id": 7}
    [event] = parse_line(line(weird_init))
    assert isinstance(event, SystemInit) and event.tools == [] and event.session_id is None
    weird = {"type": "assistant", "message": {"content": [{"type": "tool_use", "input": [1]}]}}
    [event] = parse_line(line(weird))
    assert isinstance(event, ToolUse) and event.input == {} and event.name == ""


def test_blank_line_has_no_events() -> None:
    assert parse_line("\n") == []
    assert parse_line(b"   ") == []


def test_very_long_line() -> None:
    text = "x" * (5 * 1024 * 1024)
    data = {"type": "assistant", "message": {"content": [{"type": "text", "text": text}]}}
    [event] = parse_line(line(data).encode())
    assert isinstance(event, AssistantText)
    assert len(event.text) == 5 * 1024 * 1024
