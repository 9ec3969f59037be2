"""The wire side of the scripted model: the Messages API's HTTP shapes for scripted steps.

``POST /v1/messages`` is answered as JSON or as a server-sent event stream (message_start,
content_block_start/delta/stop for text and tool_use with input_json_delta, message_delta
with usage and stop_reason, message_stop), errors in the API's error shape. Also answered:
``/v1/messages/count_tokens``, ``GET /v1/models`` and health probes (``HEAD /api/hello``,
which the CLI sends unless non-essential traffic is off, ``/health``). Which step to play
comes from a ``StepSource`` (the ``ScriptedModel``).
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol

from claude_conductor.demo.script_steps import (
    ErrorStep,
    Request,
    SlowStep,
    StallStep,
    Step,
    TextStep,
    ToolUseStep,
    absolutize,
    request_cwd,
)

__all__ = ["DEFAULT_MODEL", "RecordedRequest", "StepSource", "handler_for"]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "claude-sonnet-4-5"


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server received, for tests to assert on."""

    method: str
    path: str
    headers: dict[str, str]
    body: Request
    script: str | None
    step: int | None

    @property
    def tool_names(self) -> list[str]:
        """Names of the tools the CLI offered the model."""
        return [t.get("name", "") for t in self.body.get("tools") or [] if isinstance(t, dict)]

    @property
    def cwd(self) -> str | None:
        return request_cwd(self.body)


class StepSource(Protocol):
    """What the handler needs from the server: the step for a request, a log, a stop flag."""

    def choose(self, body: Request) -> tuple[str, int, Step]: ...

    def record(self, request: RecordedRequest) -> None: ...

    def wait_stopping(self, seconds: float) -> bool: ...


_MODELS_PAGE = {
    "data": [{"type": "model", "id": DEFAULT_MODEL, "display_name": "Scripted stand-in",
              "created_at": "2025-01-01T00:00:00Z"}],
    "has_more": False, "first_id": DEFAULT_MODEL, "last_id": DEFAULT_MODEL,
}  # fmt: skip


def _error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}}


def _estimate_tokens(raw_size: int) -> int:
    return max(1, raw_size // 4)


def _message_blocks(step: Step, body: Request) -> list[dict[str, Any]]:
    if isinstance(step, TextStep):
        return [{"type": "text", "text": step.text}]
    if isinstance(step, SlowStep):
        return [{"type": "text", "text": "".join(step.chunks)}]
    if isinstance(step, ToolUseStep):
        cwd = request_cwd(body) if step.absolute_paths else None
        blocks: list[dict[str, Any]] = [{"type": "text", "text": step.text}] if step.text else []
        for name, tool_input in step.calls:
            blocks.append(
                {
                    "type": "tool_use",
                    "id": f"toolu_{uuid.uuid4().hex[:24]}",
                    "name": name,
                    "input": absolutize(tool_input, cwd),
                }
            )
        return blocks
    return []


def handler_for(source: StepSource) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to ``source``."""

    class Handler(_Handler):
        scripted = source

    return Handler


class _Handler(BaseHTTPRequestHandler):
    scripted: StepSource
    protocol_version = "HTTP/1.1"
    server_version = "ConductorScriptedModel/1"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("scripted model: " + format, *args)

    # -- plumbing --------------------------------------------------------------------------
    def _read_body(self) -> tuple[bytes, Request]:
        size = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(size) if size else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        return raw, body if isinstance(body, dict) else {}

    def _send_json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.send_header("request-id", f"req_scripted_{uuid.uuid4().hex[:16]}")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def _record(self, body: Request, script: str | None = None, step: int | None = None) -> None:
        self.scripted.record(
            RecordedRequest(self.command, self.path, dict(self.headers), body, script, step)
        )

    # -- verbs -----------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._record({})
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self._record({})
        path = self.path.split("?")[0]
        if path == "/v1/models":
            self._send_json(200, _MODELS_PAGE)
        elif path in ("/", "/api/hello", "/health"):
            self._send_json(200, {"ok": True, "note": "scripted stand-in, not a model"})
        else:
            self._not_found()

    def do_POST(self) -> None:
        raw, body = self._read_body()
        path = self.path.split("?")[0]
        if path == "/v1/messages/count_tokens":
            self._record(body)
            self._send_json(200, {"input_tokens": _estimate_tokens(len(raw))})
        elif path == "/v1/messages":
            name, index, step = self.scripted.choose(body)
            self._record(body, name, index)
            self._answer(step, body, len(raw))
        else:
            self._record(body)
            self._not_found()

    def _not_found(self) -> None:
        self._send_json(404, _error_body("not_found_error", f"scripted model has no {self.path}"))

    # -- answers ---------------------------------------------------------------------------
    def _answer(self, step: Step, body: Request, raw_size: int) -> None:
        if isinstance(step, ErrorStep):
            headers = {} if step.retryable else {"x-should-retry": "false"}
            if step.status == 429:
                headers["retry-after"] = "1"
            self._send_json(step.status, _error_body(step.error_type, step.message), headers)
            return
        if isinstance(step, StallStep) and not step.mid_stream:
            self.scripted.wait_stopping(step.seconds)
            self.close_connection = True
            return
        usage = {
            "input_tokens": step.input_tokens
            if step.input_tokens is not None
            else _estimate_tokens(raw_size),
            "output_tokens": step.output_tokens,
        }
        blocks = _message_blocks(step, body)
        stop_reason = "tool_use" if isinstance(step, ToolUseStep) else "end_turn"
        if isinstance(step, TextStep):
            stop_reason = step.stop_reason
        message = {
            "id": f"msg_scripted_{uuid.uuid4().hex[:20]}",
            "type": "message",
            "role": "assistant",
            "model": str(body.get("model") or DEFAULT_MODEL),
            "content": blocks,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }
        if body.get("stream"):
            self._stream(message, step)
        else:
            self._send_json(200, message)

    def _event(self, kind: str, data: dict[str, Any]) -> None:
        data = {"type": kind, **data}
        self.wfile.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()

    def _stream(self, message: dict[str, Any], step: Step) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        usage = message["usage"]
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": usage["input_tokens"], "output_tokens": 1},
        }
        try:
            self._event("message_start", {"message": start})
            if isinstance(step, StallStep):
                self.scripted.wait_stopping(step.seconds)
                return
            for index, block in enumerate(message["content"]):
                self._stream_block(index, block, step)
            self._event(
                "message_delta",
                {
                    "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                    "usage": {"output_tokens": usage["output_tokens"]},
                },
            )
            self._event("message_stop", {})
        except (BrokenPipeError, ConnectionResetError):
            logger.debug("scripted model: the client went away mid-stream")

    def _stream_block(self, index: int, block: dict[str, Any], step: Step) -> None:
        if block["type"] == "text":
            self._event(
                "content_block_start",
                {"index": index, "content_block": {"type": "text", "text": ""}},
            )
            pieces = step.chunks if isinstance(step, SlowStep) else (block["text"],)
            for number, piece in enumerate(pieces):
                if number and isinstance(step, SlowStep):
                    self.scripted.wait_stopping(step.delay_seconds)
                self._event(
                    "content_block_delta",
                    {"index": index, "delta": {"type": "text_delta", "text": piece}},
                )
        else:
            start = {**block, "input": {}}
            self._event("content_block_start", {"index": index, "content_block": start})
            self._event(
                "content_block_delta",
                {
                    "index": index,
                    "delta": {
                        "type": "input_json_delta",
                        "partial_json": json.dumps(block["input"]),
                    },
                },
            )
        self._event("content_block_stop", {"index": index})
