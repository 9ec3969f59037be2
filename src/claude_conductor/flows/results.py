"""Task results live in Prefect as artifacts, so every tier (and the dashboard) reads them from
the API: ``result-<task-id>`` holds the TaskResult as JSON, ``report-<task-id>`` the markdown
report with the diff. Prefect persists no result of Conductor's flows (``persist_result=False``);
``UNPERSISTED_RESULT_STORAGE`` names the storage Prefect would fall back to, so a run does not
ask the server for its default result storage (one request at every start) for nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from prefect.artifacts import Artifact, acreate_markdown_artifact
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey
from prefect.settings import get_current_settings

from claude_conductor.flows.report import task_markdown
from claude_conductor.models import TaskResult

__all__ = [
    "RESULT_ARTIFACT_TYPE",
    "UNPERSISTED_RESULT_STORAGE",
    "publish_result",
    "read_result",
    "read_results",
    "report_key",
    "result_key",
]

logger = logging.getLogger(__name__)

RESULT_ARTIFACT_TYPE = "conductor-result"

UNPERSISTED_RESULT_STORAGE = Path(get_current_settings().results.local_storage_path)
"""The ``result_storage`` of flows that persist no result: Prefect's local default, named (a
``Path`` is resolved without the API)."""


def result_key(task_id: str) -> str:
    return f"result-{task_id}"


def report_key(task_id: str) -> str:
    return f"report-{task_id}"


def _diff_for(result: TaskResult) -> str:
    if not result.patch_path:
        return ""
    try:
        with open(result.patch_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


async def publish_result(result: TaskResult) -> None:
    """Attach the result and its report to the current flow run."""
    diff = await asyncio.to_thread(_diff_for, result)
    await acreate_markdown_artifact(
        key=report_key(result.task_id),
        markdown=task_markdown(result, diff),
        description=f"Conductor task {result.task_id}: {result.status.value}",
    )
    await Artifact(
        type=RESULT_ARTIFACT_TYPE,
        key=result_key(result.task_id),
        data=result.model_dump(mode="json"),
        description=f"Conductor result of {result.task_id}",
    ).acreate()


def _parse(data: Any) -> TaskResult | None:
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError:
            return None
    if not isinstance(data, dict):
        return None
    try:
        return TaskResult.model_validate(data)
    except ValueError:
        logger.warning("unreadable conductor result artifact: %s", str(data)[:200])
        return None


async def read_result(client: PrefectClient, task_id: str) -> TaskResult | None:
    """The latest published result of a task, or None when it has none yet."""
    found = await client.read_latest_artifacts(
        artifact_filter=ArtifactCollectionFilter(
            key=ArtifactCollectionFilterKey(any_=[result_key(task_id)])
        ),
        limit=1,
    )
    return _parse(found[0].data) if found else None


async def read_results(client: PrefectClient, task_ids: list[str]) -> dict[str, TaskResult]:
    """Latest results of many tasks at once, keyed by task id."""
    if not task_ids:
        return {}
    found = await client.read_latest_artifacts(
        artifact_filter=ArtifactCollectionFilter(
            key=ArtifactCollectionFilterKey(any_=[result_key(t) for t in task_ids])
        ),
        limit=len(task_ids),
    )
    out: dict[str, TaskResult] = {}
    for artifact in found:
        parsed = _parse(artifact.data)
        if parsed is not None:
            out[parsed.task_id] = parsed
    return out
