"""A task's diff: the ``.patch`` file its engine wrote when this machine can read it (the
standalone tier), else the ``diff`` block of its markdown report on the Prefect API (every
tier). Used by the dashboard's task page and the MCP server.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import TYPE_CHECKING

from claude_conductor.models import TaskResult

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

__all__ = ["diff_from_report", "read_patch", "read_task_diff"]

_DIFF_BLOCK = re.compile(r"^## Diff\s*\n+```diff\n(.*?)\n```\s*$", re.DOTALL | re.MULTILINE)


def read_patch(path: str | None) -> str | None:
    """The text of a ``.patch`` file, or None when there is none or it cannot be read."""
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def diff_from_report(markdown: str) -> str:
    """The diff block of a task's markdown report (``## Diff`` then a ```diff fence)."""
    found = _DIFF_BLOCK.search(markdown or "")
    return found.group(1) + "\n" if found else ""


async def read_task_diff(client: PrefectClient, result: TaskResult) -> str:
    """The diff of a finished task ("" when it changed nothing)."""
    patch = await asyncio.to_thread(read_patch, result.patch_path)
    if patch is not None:
        return patch
    from claude_conductor.client.tasks import read_report

    return diff_from_report(await read_report(client, result.task_id))
