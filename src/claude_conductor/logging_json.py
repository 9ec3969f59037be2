"""Structured logs: with ``CONDUCTOR_LOG_FORMAT=json`` Conductor's processes (Prefect server,
workers, flow runs, the exporter) write one JSON object a line on stderr, for Loki or any log
shipper. Every line a task's flow run produces carries ``task_id`` and ``flow_run_id``. The
default (``text``) leaves Prefect's human-readable console format alone.

Stack processes get it through ``prefect_logging_env(settings)`` (``PREFECT_LOGGING_SETTINGS_PATH``
pointing at ``logging_json.yml``, inherited by every flow run); processes Conductor runs
itself call ``configure_logging(settings)``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from claude_conductor.settings import ConductorSettings

__all__ = [
    "CONFIG_PATH",
    "JsonFormatter",
    "configure_logging",
    "log_ids",
    "prefect_logging_env",
]

CONFIG_PATH = Path(__file__).with_name("logging_json.yml")
"""Prefect's logging configuration with the JSON console handler."""

_FLOW_RUN_ENV = "PREFECT__FLOW_RUN_ID"  # set by Prefect's workers in each flow-run process
# LogRecord attributes that are not user ``extra`` fields.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_PREFECT_EXTRAS = {
    "flow_run_id",
    "flow_run_name",
    "flow_name",
    "task_run_id",
    "task_run_name",
    "task_name",
    "worker_id",
    "send_to_api",
}
# flow-run id -> task id (from the run's name), learned from the records that carry both.
_names: dict[str, str] = {}


def _context_run() -> tuple[str | None, str | None]:
    try:
        from prefect.context import FlowRunContext
    except ImportError:  # pragma: no cover - prefect is a dependency
        return None, None
    ctx = FlowRunContext.get()
    run = getattr(ctx, "flow_run", None) if ctx is not None else None
    if run is None:
        return None, None
    return str(run.id), run.name


def log_ids(record: logging.LogRecord) -> tuple[str | None, str | None]:
    """``(task_id, flow_run_id)`` of a record: Prefect's run-logger fields, else the flow run
    whose context the record was logged in, else this flow-run process's own run."""
    run_id = getattr(record, "flow_run_id", None)
    task_id = getattr(record, "flow_run_name", None)
    if run_id is None or task_id is None:
        ctx_id, ctx_name = _context_run()
        run_id = run_id or ctx_id
        task_id = task_id or ctx_name
    if run_id is None:
        run_id = os.environ.get(_FLOW_RUN_ENV) or None
    run_id = str(run_id) if run_id is not None else None
    if task_id:
        # A run is named ``<task id>: <title>`` (flows.identity); ids never hold a colon.
        task_id = str(task_id).split(":", 1)[0]
    if run_id is not None:
        if task_id:
            _names[run_id] = task_id
        else:
            task_id = _names.get(run_id)
    return (str(task_id) if task_id else None), run_id


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts``, ``level``, ``logger``, ``message``, ``task_id``,
    ``flow_run_id`` (both null outside a task), ``task_run`` when in a Prefect task, ``exc``
    with the traceback, and any ``extra`` fields a caller passed."""

    def format(self, record: logging.LogRecord) -> str:
        task_id, run_id = log_ids(record)
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "task_id": task_id,
            "flow_run_id": run_id,
            "pid": record.process,
        }
        task_run = getattr(record, "task_run_name", None)
        if task_run:
            doc["task_run"] = str(task_run)
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in _PREFECT_EXTRAS and key not in doc:
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def prefect_logging_env(settings: ConductorSettings) -> dict[str, str]:
    """Variables that make Prefect processes (and the flow runs they start) log JSON lines;
    empty for the text format."""
    if settings.log_format != "json":
        return {}
    return {"PREFECT_LOGGING_SETTINGS_PATH": str(CONFIG_PATH), "CONDUCTOR_LOG_FORMAT": "json"}


def configure_logging(settings: ConductorSettings) -> None:
    """In this process: JSON lines on stderr for the root logger and Prefect's console
    handlers when ``log_format`` is json, ``claude_conductor`` at INFO; nothing for text."""
    if settings.log_format != "json":
        return
    formatter = JsonFormatter()
    for name in (None, "prefect", "prefect._internal", "prefect.extra", "uvicorn", "fastapi"):
        logger = logging.getLogger(name)
        streams = [
            h
            for h in logger.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
        ]
        if not streams and name is not None:
            continue
        for handler in streams:  # Prefect's console handler renders rich markup: replace it
            logger.removeHandler(handler)
        plain = logging.StreamHandler(sys.stderr)
        plain.setFormatter(formatter)
        logger.addHandler(plain)
    logging.getLogger("claude_conductor").setLevel(logging.INFO)
