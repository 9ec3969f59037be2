"""The JSON log format: one object a line with the task's ids, Prefect's config loads it, and
the default text format changes nothing."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from claude_conductor.logging_json import CONFIG_PATH, JsonFormatter, prefect_logging_env
from claude_conductor.settings import ConductorSettings


def _record(msg: str, **extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "x", "levelname": "INFO", "msg": msg, **extra})
    return record


def test_prefect_run_fields_become_task_and_flow_run_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    doc = json.loads(
        JsonFormatter().format(
            _record("hi [bold]x[/]", flow_run_id="r-1", flow_run_name="t-1", task_run_name="tr")
        )
    )
    assert (doc["task_id"], doc["flow_run_id"], doc["task_run"]) == ("t-1", "r-1", "tr")
    assert doc["message"] == "hi [bold]x[/]" and doc["level"] == "INFO"
    assert "flow_run_name" not in doc


def test_a_flow_run_process_tags_its_other_lines_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", "r-2")
    formatter = JsonFormatter()
    formatter.format(_record("first", flow_run_id="r-2", flow_run_name="t-2"))
    doc = json.loads(formatter.format(_record("a library line")))
    assert (doc["task_id"], doc["flow_run_id"]) == ("t-2", "r-2")
    try:
        raise ValueError("boom")
    except ValueError:
        exc = json.loads(formatter.format(_record("failed", exc_info=sys.exc_info())))
    assert "ValueError: boom" in exc["exc"]


def test_outside_a_task_the_ids_are_null(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
    doc = json.loads(JsonFormatter().format(_record("server line")))
    assert doc["task_id"] is None and doc["flow_run_id"] is None


def test_text_is_the_default_and_changes_nothing() -> None:
    assert ConductorSettings().log_format == "text"
    assert prefect_logging_env(ConductorSettings()) == {}
    env = prefect_logging_env(ConductorSettings(log_format="json"))
    assert env["PREFECT_LOGGING_SETTINGS_PATH"] == str(CONFIG_PATH) and CONFIG_PATH.is_file()


def test_bad_log_format_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "claude_conductor.cli.main", "metrics", "show"],
        env={"CONDUCTOR_LOG_FORMAT": "xml", "PATH": "/usr/bin:/bin", "HOME": "/tmp"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    assert "log_format" in out.stderr and "'xml'" in out.stderr


def test_prefect_loads_the_config_and_logs_json_lines(tmp_path: object) -> None:
    code = (
        "import logging; from prefect.logging.configuration import setup_logging; setup_logging(); "
        "logging.getLogger('claude_conductor.x').info('hello %s', 'there'); "
        "logging.getLogger('prefect.server').warning('warned')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={
            "PREFECT_LOGGING_SETTINGS_PATH": str(CONFIG_PATH),
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "PREFECT_HOME": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(ln) for ln in out.stderr.splitlines() if ln.strip()]
    assert [(d["logger"], d["message"]) for d in lines] == [
        ("claude_conductor.x", "hello there"),
        ("prefect.server", "warned"),
    ]
