"""Every dashboard page through Streamlit's AppTest, on a real Prefect server."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from claude_conductor.dashboard import launch
from claude_conductor.dashboard.cache import clear_cache

pytestmark = pytest.mark.integration

APP = str(launch.app_path())
TIMEOUT_SECONDS = 60


@pytest.fixture(autouse=True)
def _env(conductor_env: dict[str, str], seeded: Any) -> Iterator[None]:
    clear_cache()
    yield


def _app(page: str | None = None, **query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_SECONDS)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    if page is not None:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _texts(at: AppTest) -> str:
    """Everything a person reads on the page, as one string."""
    parts: list[str] = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "text", "code",
                 "error", "warning", "info", "success", "metric"):  # fmt: skip
        for el in getattr(at, kind):
            parts.append(str(getattr(el, "value", "")))
            parts.append(str(getattr(el, "label", "")))
    for frame in at.dataframe:
        parts.append(frame.value.to_string())
    return "\n".join(parts)


def test_overview_shows_agents_queue_and_costs(seeded: Any) -> None:
    at = _app()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Agents online"] == "1"
    assert int(metrics["Queued"]) >= 1 and int(metrics["Running"]) >= 1
    assert metrics["Success rate"].endswith("%")
    assert metrics["Cost today"].startswith("$")
    text = _texts(at)
    for title in (
        "Outcomes over time",
        "Queue depth by priority",
        "Cost per day (USD) by kind",
        "Tokens per day by kind",
        "Slowest recent tasks",
        "Most expensive recent tasks",
    ):
        assert title in text  # fmt: skip
    assert seeded.ok_id in text  # in the most expensive table
    assert "listening on 127.0.0.1 only" in text


def test_tasks_table_lists_and_filters(seeded: Any) -> None:
    at = _app("views/tasks.py")
    table = at.dataframe[0].value
    assert {seeded.ok_id, seeded.failed_id, seeded.running_id} <= set(table["task_id"])
    at.multiselect(key="f_status").select("failed").run()
    table = at.dataframe[0].value
    assert set(table["status"]) == {"failed"} and seeded.failed_id in set(table["task_id"])
    at.selectbox(key="open_task").select(seeded.failed_id).run()
    assert at.query_params["task"] == seeded.failed_id
    assert at.title[0].value == "Review the error handling"


def test_task_detail_shows_diff_transcript_verify_and_report(seeded: Any) -> None:
    at = _app("views/tasks.py", task=seeded.ok_id)
    assert at.title[0].value == "Rename foo to bar"
    text = _texts(at)
    assert "+def bar(x):" in text  # the diff, per file
    assert "src/app.py" in text and "tests/test_app.py" in text
    assert "I'll rename `foo` to `bar` and add a test." in text  # transcript text
    assert "The file src/app.py has been updated." in text  # a tool result
    assert "exited with **0**" in text  # verify
    assert "## Diff" in text or "Files changed" in text  # the report
    assert [b.label for b in at.button if b.label in {"Cancel", "Retry"}] == ["Retry"]
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["Cost"], metrics["Tokens"], metrics["Turns"]) == ("$0.123", "12.8k", "4")


def test_cancel_a_running_task_from_its_page(seeded: Any) -> None:
    task_id = seeded.make_running("page-cancel")
    at = _app("views/tasks.py", task=task_id)
    assert "running" in _texts(at)
    next(b for b in at.button if b.label == "Cancel").click().run()
    assert not at.exception
    clear_cache()
    at.run()
    assert "Cancelling" in _texts(at) or "cancelled" in _texts(at)


def test_submit_form_shows_errors_next_to_fields_then_submits(seeded: Any, tmp_path: Any) -> None:
    at = _app("views/submit.py")
    at.text_area(key="form_prompt").input("   ")
    at.number_input(key="form_priority").set_value(0)
    at.button(key="FormSubmitter:task_form-Submit task").click().run()
    errors = [e.value for e in at.error]
    assert any("needs a prompt" in e for e in errors)
    assert any("from 1 (lowest) to 10" in e for e in errors)
    assert any("repository path" in e for e in errors)
    at.text_input(key="form_repo").input(str(tmp_path))
    at.text_area(key="form_prompt").input("Summarise the README")
    at.number_input(key="form_priority").set_value(7)
    at.button(key="FormSubmitter:task_form-Submit task").click().run()
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    task_id = at.query_params["task"]
    assert task_id.startswith("t-")
    assert at.title[0].value == "Summarise the README"


def test_submit_yaml_reports_problems(seeded: Any) -> None:
    at = _app("views/submit.py")
    at.text_area(key="yaml_text").input("kind: magic\nprompt: x\n")
    at.button(key="yaml_submit").click().run()
    assert "allowed: one of code_review" in _texts(at)


def test_agents_page_shows_slots_and_scale(seeded: Any) -> None:
    at = _app("views/agents.py")
    text = _texts(at)
    assert seeded.pool in text and seeded.worker in text
    assert "Slot 1" in text
    at.number_input(key="scale_agents").set_value(0)
    at.button(key="FormSubmitter:scale-Apply").click().run()
    assert "whole number from 1" in at.error[0].value


def test_settings_page_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONDUCTOR_API_AUTH_STRING", "admin:sup3r-secret")
    monkeypatch.setenv("CONDUCTOR_DASHBOARD_PASSWORD", "pa55-word")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_SECONDS)
    at.session_state["conductor_signed_in"] = _fingerprint("pa55-word")
    at.run()
    at.switch_page("views/settings.py").run()
    assert not at.exception
    text = _texts(at) + "\n" + "\n".join(str(b.proto) for b in at.get("download_button"))
    assert "********" in text
    assert "sup3r-secret" not in text and "pa55-word" not in text
    assert "A dashboard password is set" in text


def _fingerprint(password: str) -> str:
    import hashlib

    return hashlib.sha256(password.encode()).hexdigest()


def test_password_gate_refuses_wrong_and_accepts_right(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONDUCTOR_DASHBOARD_PASSWORD", "open-sesame")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_SECONDS).run()
    assert [t.value for t in at.title] == [":material/lock: Claude Conductor"]
    assert not at.metric and not at.dataframe
    at.text_input(key="sign_in_password").input("wrong")
    at.button(key="FormSubmitter:sign_in-Sign in").click().run()
    assert "Wrong password" in at.error[0].value
    assert not at.metric and not at.dataframe
    at.text_input(key="sign_in_password").input("open-sesame")
    at.button(key="FormSubmitter:sign_in-Sign in").click().run()
    assert not at.exception
    assert at.title[0].value == "Overview"
    assert {m.label for m in at.metric} >= {"Agents online", "Queued"}


@pytest.mark.parametrize("page", [None, "views/tasks.py", "views/agents.py"])
def test_pages_say_when_the_server_is_down(
    page: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("CONDUCTOR_API_URL", f"http://127.0.0.1:{port}/api")
    at = _app(page)
    assert not at.exception
    assert any("server is not running" in e.value for e in at.error), [e.value for e in at.error]
    assert "conductor up" in at.error[0].value
