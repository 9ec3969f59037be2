"""The quick health check before any API call: a server that is not there is "not running"
at once; a server that accepted the connection but is slow (a busy machine) is waited for,
and one that never answers is a bounded timeout that says it is running but stuck."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from claude_conductor.client.connection import run_sync
from claude_conductor.client.rest import check_reachable
from claude_conductor.errors import ApiTimeoutError, ServerNotRunningError


class _SlowHealth(http.server.BaseHTTPRequestHandler):
    delay = 0.0

    def do_GET(self) -> None:
        time.sleep(self.delay)
        self.send_response(200)
        self.send_header("content-length", "4")
        self.end_headers()
        self.wfile.write(b"true")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def slow_server(request: pytest.FixtureRequest) -> Iterator[str]:
    handler = type("Handler", (_SlowHealth,), {"delay": request.param})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://user:hunter2@127.0.0.1:{server.server_address[1]}/api"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("slow_server", [0.6], indirect=True)
def test_a_slow_but_running_server_is_waited_for(slow_server: str) -> None:
    run_sync(check_reachable(slow_server, timeout_seconds=0.2, busy_timeout_seconds=5))


@pytest.mark.parametrize("slow_server", [3.0], indirect=True)
def test_a_stuck_server_is_a_bounded_timeout_not_not_running(slow_server: str) -> None:
    started = time.monotonic()
    with pytest.raises(ApiTimeoutError) as caught:
        run_sync(check_reachable(slow_server, timeout_seconds=0.2, busy_timeout_seconds=0.5))
    assert time.monotonic() - started < 2.5
    assert "accepted the connection" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_nothing_listening_is_not_running_at_once() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ServerNotRunningError):
        run_sync(check_reachable(f"http://127.0.0.1:{port}/api"))
    assert time.monotonic() - started < 2
