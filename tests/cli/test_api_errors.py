"""A Prefect API that fails a request (overloaded: 503; gone: connection refused) is one line
and exit 1 from any command, never a traceback, and the URL's password is not shown."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest


class _Overloaded(http.server.BaseHTTPRequestHandler):
    """Answers /health (so the CLI's quick check passes) and 503 to everything else, as
    Prefect's server does when SQLite stays locked."""

    status = 503
    failure = b'{"exception_message": "Service Unavailable"}'

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        ok = self.path.endswith("/health")
        body = b"true" if ok else self.failure
        self.send_response(200 if ok else self.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = _answer

    def log_message(self, *args: object) -> None:
        pass


class _Refusing(_Overloaded):
    """422 with a reason, as Prefect answers a job variable a locked pool does not take."""

    status = 422
    failure = (
        b'{"detail": "Error creating flow run: Validation failed for field \'env\'. '
        b"Failure reason: Additional properties are not allowed ('env' was unexpected)\"}"
    )


def _serve(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://admin:hunter2@127.0.0.1:{server.server_address[1]}/api"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def overloaded_api() -> Iterator[str]:
    yield from _serve(_Overloaded)


@pytest.fixture
def refusing_api() -> Iterator[str]:
    yield from _serve(_Refusing)


def _conductor(home: Path, api_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "CONDUCTOR_HOME": str(home / "conductor"),
        "CONDUCTOR_API_URL": api_url,
        "PREFECT_CLIENT_MAX_RETRIES": "0",  # Prefect's client retries 5xx for minutes
    }
    return subprocess.run(
        [sys.executable, "-m", "claude_conductor.cli.main", *args],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("args", [("tasks", "list"), ("status",)])  # Prefect's client; plain HTTP
def test_an_overloaded_api_is_one_line_and_exit_1(
    tmp_path: Path, overloaded_api: str, args: tuple[str, ...]
) -> None:
    out = _conductor(tmp_path, overloaded_api, *args)
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr and "503 Service Unavailable" in out.stderr
    assert "retry in a moment" in out.stderr and "hunter2" not in out.stderr


def test_an_api_that_is_gone_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = _conductor(tmp_path, f"http://127.0.0.1:{port}/api", "tasks", "list")
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.count("\n") <= 3, out.stderr


def test_a_refused_request_names_the_reason_and_exits_2(tmp_path: Path, refusing_api: str) -> None:
    out = _conductor(tmp_path, refusing_api, "tasks", "list")
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and "422" in out.stderr, out.stderr
    assert "'env' was unexpected" in out.stderr and "hunter2" not in out.stderr
