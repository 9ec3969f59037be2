"""The scripted Messages API over plain HTTP (the real CLI drives it in test_runtime_real)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from claude_conductor.demo.script_steps import (
    Request,
    _greeting_main,
    error,
    last_tool_result,
    request_cwd,
    slow,
    stall,
    text,
    tool_use,
)
from claude_conductor.demo.scripted_model import ScriptedModel

PROJECT_MAIN = Path(__file__).parents[2] / "src/claude_conductor/demo/project/main.py"


def body(*messages: dict[str, Any], stream: bool = False, cwd: str = "/w/repo") -> Request:
    return {
        "model": "claude-test",
        "max_tokens": 1000,
        "stream": stream,
        "system": [{"type": "text", "text": "You are Claude Code."}],
        "messages": [
            *messages[:1],
            {"role": "system", "content": f"# Environment\n - Primary working directory: {cwd}\n"},
            *messages[1:],
        ],
    }


def user(text_: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": text_}]}


def post(url: str, data: Request, path: str = "/v1/messages") -> tuple[int, bytes, Any]:
    request = urllib.request.Request(
        url + path,
        data=json.dumps(data).encode(),
        headers={"content-type": "application/json", "x-api-key": "k"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers


def sse_events(raw: bytes) -> list[dict[str, Any]]:
    events = []
    for chunk in raw.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.splitlines() if ": " in line)
        if "data" in lines:
            data = json.loads(lines["data"])
            assert data["type"] == lines["event"]
            events.append(data)
    return events


@pytest.fixture
def model() -> Any:
    with ScriptedModel(default_script="hello") as server:
        server.add_script("hello", [text("hi there", input_tokens=10, output_tokens=3)])
        yield server


def test_non_streaming_text(model: ScriptedModel) -> None:
    status, raw, _ = post(model.url, body(user("say hi")))
    message = json.loads(raw)
    assert status == 200
    assert message["content"] == [{"type": "text", "text": "hi there"}]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"] == {"input_tokens": 10, "output_tokens": 3}
    assert message["id"] != json.loads(post(model.url, body(user("again")))[1])["id"]


def test_streaming_tool_use_with_absolute_path(model: ScriptedModel) -> None:
    marker = model.add_script("w", [tool_use("Write", {"file_path": "a.txt", "content": "A"})])
    status, raw, headers = post(model.url, body(user(f"go {marker}"), stream=True))
    assert status == 200 and headers["content-type"] == "text/event-stream"
    events = sse_events(raw)
    kinds = [e["type"] for e in events]
    assert kinds == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    block = events[1]["content_block"]
    assert block["type"] == "tool_use" and block["name"] == "Write"
    assert block["id"].startswith("toolu_")
    assert json.loads(events[2]["delta"]["partial_json"]) == {
        "file_path": "/w/repo/a.txt",
        "content": "A",
    }
    assert events[4]["delta"]["stop_reason"] == "tool_use"
    assert events[4]["usage"]["output_tokens"] > 0
    assert events[0]["message"]["usage"]["input_tokens"] > 0


def test_step_is_the_number_of_assistant_messages(model: ScriptedModel) -> None:
    marker = model.add_script("two", [text("first"), text("second")])
    history = [
        user(f"hi {marker}"),
        {"role": "assistant", "content": [{"type": "text", "text": "first"}]},
        user("more"),
    ]
    assert json.loads(post(model.url, body(*history))[1])["content"][0]["text"] == "second"
    assert json.loads(post(model.url, body(history[0]))[1])["content"][0]["text"] == "first"
    past_end = [*history, {"role": "assistant", "content": "second"}, user("and?")]
    assert "no step 2" in json.loads(post(model.url, body(*past_end))[1])["content"][0]["text"]
    assert [(r.script, r.step) for r in model.messages_requests("two")] == [
        ("two", 1),
        ("two", 0),
        ("two", 2),
    ]


def test_errors_have_the_api_shape(model: ScriptedModel) -> None:
    for code, kind in ((401, "authentication_error"), (429, "rate_limit_error"),
                       (529, "overloaded_error"), (500, "api_error")):  # fmt: skip
        marker = model.add_script(f"e{code}", [error(code)])
        status, raw, headers = post(model.url, body(user(marker)))
        assert status == code
        assert json.loads(raw) == {
            "type": "error",
            "error": {"type": kind, "message": f"scripted {kind}"},
        }
        assert headers["x-should-retry"] == "false"


def test_unknown_script_is_a_400_naming_the_known_ones(model: ScriptedModel) -> None:
    status, raw, _ = post(model.url, body(user("[script:nope]")))
    assert status == 400
    assert "unknown script 'nope'" in raw.decode() and "hello" in raw.decode()


def test_callable_steps_see_the_request(model: ScriptedModel) -> None:
    def echo_result(request: Request) -> Any:
        seen = last_tool_result(request)
        return text(f"saw {seen}")

    marker = model.add_script("dyn", [tool_use("Read", {"file_path": "x"}), echo_result])
    history = [
        user(marker),
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read"}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                      "content": "1\thello", "is_error": False}]},
    ]  # fmt: skip
    answer = json.loads(post(model.url, body(*history))[1])["content"][0]["text"]
    assert answer == "saw ('1\\thello', False)"


def test_other_endpoints(model: ScriptedModel) -> None:
    status, raw, _ = post(model.url, body(user("x")), "/v1/messages/count_tokens")
    assert status == 200 and json.loads(raw)["input_tokens"] > 0
    with urllib.request.urlopen(model.url + "/v1/models", timeout=5) as response:
        assert json.loads(response.read())["data"][0]["type"] == "model"
    head = urllib.request.Request(model.url + "/api/hello", method="HEAD")
    with urllib.request.urlopen(head, timeout=5) as response:
        assert response.status == 200
    assert post(model.url, {}, "/v1/elsewhere")[0] == 404
    assert [r.path for r in model.requests][-1] == "/v1/elsewhere"


def test_stall_hangs_until_the_server_stops() -> None:
    server = ScriptedModel().start()
    marker = server.add_script("s", [stall(60)])
    outcome: list[BaseException | tuple[int, bytes, Any]] = []

    def call() -> None:
        try:
            outcome.append(post(server.url, body(user(marker))))
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.5)
    assert outcome == []  # still hanging
    started = time.monotonic()
    server.stop()
    caller.join(timeout=10)
    assert time.monotonic() - started < 5
    assert outcome and isinstance(outcome[0], Exception)  # the connection was dropped


def test_slow_streams_in_pieces(model: ScriptedModel) -> None:
    marker = model.add_script("slow", [slow("abcdef", chunks=3, delay_seconds=0.1)])
    started = time.monotonic()
    _, raw, _ = post(model.url, body(user(marker), stream=True))
    deltas = [e["delta"]["text"] for e in sse_events(raw) if e["type"] == "content_block_delta"]
    assert deltas == ["ab", "cd", "ef"]
    assert time.monotonic() - started >= 0.2


def test_request_cwd_found_in_system_or_messages() -> None:
    assert request_cwd(body(user("x"), cwd="/tmp/a b")) == "/tmp/a b"
    assert request_cwd({"system": "Primary working directory: /srv/x\n"}) == "/srv/x"
    assert request_cwd({"messages": []}) is None


def test_demo_edit_turns_the_project_main_into_a_greet_user(tmp_path: Path) -> None:
    edited = _greeting_main(PROJECT_MAIN.read_text())
    assert "from greet import greet" in edited and 'print(greet("world"))' in edited
    assert 'print("Hello, world!")' not in edited
    (tmp_path / "greet.py").write_text("def greet(name):\n    return f'Hello, {name}!'\n")
    (tmp_path / "main.py").write_text(edited)
    done = subprocess.run(
        [sys.executable, "main.py"], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert done.stdout == "Hello, world!\n"


def test_standalone_server_prints_url_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "claude_conductor.demo.scripted_model", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        status, raw, _ = post(url, body(user("add a greeting helper")))
        assert status == 200 and json.loads(raw)["content"][-1]["name"] == "Write"  # demo
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
