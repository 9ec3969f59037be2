"""What every door checks before it hands a task to Prefect (the CLI's ``run`` and
``schedule add``, the MCP server): the task's fields, as a task file's are, and its local
repositories. Nothing is created; errors are ``InputError`` naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from claude_conductor.git_urls import is_git_url
from claude_conductor.models import TaskSpec
from claude_conductor.taskfile import parse_task
from claude_conductor.workspaces.source import check_local_source

__all__ = ["absolute_repo", "check_sources", "spec_from_fields"]


def absolute_repo(repo: str, base: Path) -> str:
    """A local repository path made absolute against ``base`` (git URLs unchanged)."""
    if not isinstance(repo, str) or not repo.strip() or "\x00" in repo or is_git_url(repo):
        return repo
    path = Path(repo).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def spec_from_fields(data: Mapping[str, Any], *, base: Path, source: str) -> TaskSpec:
    """A TaskSpec from task fields given as data (not a file), validated exactly as a task
    file's are (``taskfile.parse_task``); relative local repositories, the task's and its
    subtasks', are taken relative to ``base``."""
    fields = dict(data)
    if "repo" in fields:
        fields["repo"] = absolute_repo(fields["repo"], base)
    else:
        fields["repo"] = str(base)
    subtasks = fields.get("subtasks")
    if isinstance(subtasks, list):
        fields["subtasks"] = [
            {**sub, "repo": absolute_repo(sub["repo"], base)}
            if isinstance(sub, dict) and "repo" in sub
            else sub
            for sub in subtasks
        ]
    return parse_task(fields, source=source)


def check_sources(spec: TaskSpec) -> None:
    """Every local repository of ``spec`` (and its subtasks) exists, is a git repository and
    has the ref; ``InputError`` otherwise. Git URLs are left to the worker."""
    for repo, ref in dict.fromkeys((t.repo, t.ref) for t in [spec, *spec.expanded_subtasks()]):
        check_local_source(repo, ref)
