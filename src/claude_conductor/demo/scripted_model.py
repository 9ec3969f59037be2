"""A scripted stand-in for the Anthropic Messages API. It is NOT a model.

The real ``claude`` CLI talks to it through ``ANTHROPIC_BASE_URL`` (any ``ANTHROPIC_API_KEY``
will do) and gets answers played from a script instead of generated: tests use it to drive the
real agent through file edits, refused tools, API errors and stalls, and the offline demo uses
it so a newcomer can watch Conductor work without an API key.

The server is stateless per request, so any number of agents can share it: the step played is
the number of assistant messages already in the request's conversation, and the script is
chosen by a ``[script:NAME]`` marker in the conversation's first user message (otherwise the
default script, ``demo`` unless told). Scripts are lists of steps from ``script_steps``::

    with ScriptedModel() as model:
        model.add_script("hello", [tool_use("Write", {...}), text("done")])
        env = {"ANTHROPIC_BASE_URL": model.url, "ANTHROPIC_API_KEY": "sk-scripted-anything"}

Run it alone with ``python -m claude_conductor.demo.scripted_model --port 8765``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any

from claude_conductor.demo.script_steps import (
    ErrorStep,
    Request,
    SlowStep,
    StallStep,
    Step,
    StepLike,
    TextStep,
    ToolUseStep,
    absolutize,
    assistant_count,
    demo_steps,
    ensure_sequence,
    error,
    request_cwd,
    request_text,
    text,
)

__all__ = ["RecordedRequest", "ScriptedModel", "main"]

logger = logging.getLogger(__name__)

_SCRIPT_RE = re.compile(r"\[script:([A-Za-z0-9_.-]+)\]")
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


class ScriptedModel:
    """The Messages API look-alike on ``127.0.0.1``, served from a background thread."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, default_script: str = "demo"):
        self._host, self._port = host, port
        self.default_script = default_script
        self._scripts: dict[str, tuple[StepLike, ...]] = {"demo": tuple(demo_steps())}
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> ScriptedModel:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = ThreadingHTTPServer((self._host, self._port), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # ends stalled answers
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ScriptedModel:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the scripted model is not running: call start() first")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    # -- scripts and the request log ------------------------------------------------------
    def add_script(self, name: str, steps: Sequence[StepLike]) -> str:
        """Register ``steps`` as script ``name``; returns the marker to put in a prompt."""
        if not _SCRIPT_RE.fullmatch(f"[script:{name}]"):
            raise ValueError(f"script name {name!r}: use letters, digits, '_', '.', '-'")
        with self._lock:
            self._scripts[name] = ensure_sequence(steps)
        return f"[script:{name}]"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def messages_requests(self, script: str | None = None) -> list[RecordedRequest]:
        """The ``/v1/messages`` requests, optionally of one script only."""
        return [
            r
            for r in self.requests
            if r.path.startswith("/v1/messages")
            and "count_tokens" not in r.path
            and (script is None or r.script == script)
        ]

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def choose(self, body: Request) -> tuple[str, int, Step]:
        """The script, step index and concrete step that answer ``body``."""
        match = _SCRIPT_RE.search(request_text(body, first_user_only=True))
        name = match.group(1) if match else self.default_script
        index = assistant_count(body)
        with self._lock:
            script = self._scripts.get(name)
            known = sorted(self._scripts)
        if script is None:
            return name, index, error(400, f"unknown script {name!r}; registered: {known}")
        if index >= len(script):
            return name, index, text(f"(script {name!r} has no step {index}; ending here)")
        step = script[index]
        return name, index, step if isinstance(step, Step) else step(body)

    def wait_stopping(self, seconds: float) -> bool:
        return self._stopping.wait(seconds)


# --------------------------------------------------------------------------- HTTP handling


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


def _handler_for(model: ScriptedModel) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        scripted = model

    return Handler


class _Handler(BaseHTTPRequestHandler):
    scripted: ScriptedModel
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
        self.scripted._record(
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
            now = "2025-01-01T00:00:00Z"
            self._send_json(
                200,
                {
                    "data": [
                        {
                            "type": "model",
                            "id": DEFAULT_MODEL,
                            "display_name": "Scripted",
                            "created_at": now,
                        }
                    ],
                    "has_more": False,
                    "first_id": DEFAULT_MODEL,
                    "last_id": DEFAULT_MODEL,
                },
            )
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
        self._send_json(
            404,
            {
                "type": "error",
                "error": {
                    "type": "not_found_error",
                    "message": f"scripted model has no {self.path}",
                },
            },
        )

    # -- answers ---------------------------------------------------------------------------
    def _answer(self, step: Step, body: Request, raw_size: int) -> None:
        if isinstance(step, ErrorStep):
            headers = {} if step.retryable else {"x-should-retry": "false"}
            if step.status == 429:
                headers["retry-after"] = "1"
            self._send_json(
                step.status,
                {"type": "error", "error": {"type": step.error_type, "message": step.message}},
                headers,
            )
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


# --------------------------------------------------------------------------- standalone


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m claude_conductor.demo.scripted_model",
        description="Serve a scripted stand-in for the Anthropic Messages API (not a model).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port (0: a free one)")
    parser.add_argument("--default-script", default="demo", help="script without a marker")
    args = parser.parse_args(argv)
    with ScriptedModel(host=args.host, port=args.port, default_script=args.default_script) as m:
        print(m.url, flush=True)
        print(
            f"Scripted model (not a real model) at {m.url}; point claude at it with "
            f"ANTHROPIC_BASE_URL={m.url} ANTHROPIC_API_KEY=sk-scripted-offline. "
            "Stop with Ctrl-C or SIGTERM.",
            flush=True,
        )
        done = threading.Event()

        def _on_signal(signum: int, frame: FrameType | None) -> None:
            done.set()

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
