"""A scripted stand-in for the Anthropic Messages API. It is NOT a model.

The real ``claude`` CLI talks to it through ``ANTHROPIC_BASE_URL`` (any ``ANTHROPIC_API_KEY``
will do) and gets answers played from a script instead of generated: tests use it to drive the
real agent through file edits, refused tools, API errors and stalls, and the offline demo uses
it so a newcomer can watch Conductor work without an API key.

The server is stateless per request, so any number of agents can share it: the step played is
the number of assistant messages already in the request's conversation, and the script is
chosen by a ``[script:NAME]`` marker in the conversation's first user message (otherwise the
default script, ``demo`` unless told). Scripts are lists of steps (``script_steps``)::

    from claude_conductor.demo.scripted_model import ScriptedModel, error, text, tool_use

    with ScriptedModel() as model:
        marker = model.add_script("hello", [
            tool_use("Write", {"file_path": "hello.txt", "content": "hi\\n"}),  # cwd-relative
            text("Wrote hello.txt."),                                        # end_turn
        ])
        env = {"ANTHROPIC_BASE_URL": model.url, "ANTHROPIC_API_KEY": "sk-scripted-anything"}
        # run claude with env and a prompt containing `marker`; then model.requests

Steps: ``text``, ``tool_use``, ``error(status)`` (401/429/500/529 in the API's shape),
``stall(seconds)`` (accept, then silence), ``slow``, or a callable ``(request) -> step``.
Usage numbers are reported (input estimated from the request size unless given), so the CLI
computes a real cost.

Run it alone with ``python -m claude_conductor.demo.scripted_model --port 8765``.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import threading
from collections import deque
from collections.abc import Sequence
from http.server import ThreadingHTTPServer
from types import FrameType, TracebackType

from claude_conductor.demo.messages_api import RecordedRequest, handler_for
from claude_conductor.demo.script_steps import (
    Request,
    Step,
    StepLike,
    assistant_count,
    demo_steps,
    ensure_sequence,
    error,
    request_text,
    slow,
    stall,
    text,
    tool_use,
)

# The step constructors are re-exported: one import is enough to write a script.
__all__ = [
    "RecordedRequest",
    "ScriptedModel",
    "error",
    "main",
    "slow",
    "stall",
    "text",
    "tool_use",
]

logger = logging.getLogger(__name__)

_SCRIPT_RE = re.compile(r"\[script:([A-Za-z0-9_.-]+)\]")


class ScriptedModel:
    """The Messages API look-alike on ``127.0.0.1``, served from a background thread."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        default_script: str = "demo",
        max_logged_requests: int = 500,
    ) -> None:
        self._host, self._port = host, port
        self.default_script = default_script
        self._scripts: dict[str, tuple[StepLike, ...]] = {"demo": tuple(demo_steps())}
        self._lock = threading.Lock()
        # Bounded: a long-running demo server must not grow without end.
        self._requests: deque[RecordedRequest] = deque(maxlen=max_logged_requests)
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> ScriptedModel:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = ThreadingHTTPServer((self._host, self._port), handler_for(self))
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
        """The latest requests received (up to ``max_logged_requests``), oldest first."""
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

    def record(self, request: RecordedRequest) -> None:
        """Add ``request`` to the log (called by the HTTP handler)."""
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
        if isinstance(step, Step):
            return name, index, step
        try:
            return name, index, step(body)
        except Exception as exc:  # a broken test script: answer so the CLI reports it
            logger.exception("scripted model: step %d of script %r raised", index, name)
            return name, index, error(500, f"step {index} of script {name!r} raised {exc!r}")

    def wait_stopping(self, seconds: float) -> bool:
        return self._stopping.wait(seconds)


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
