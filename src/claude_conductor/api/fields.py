"""Keyword arguments of the Python API -> a validated ``TaskSpec``, with the same checks and the
same messages as task files: one ``InputError`` naming the field, the value and the fix (a
mistyped keyword gets the closest field), raised before anything is created anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from claude_conductor.errors import InputError
from claude_conductor.models import TaskSpec, new_task_id
from claude_conductor.taskfile import describe_validation_error, resolve_repo_paths
from claude_conductor.workspaces.source import check_local_source

__all__ = ["check_repos", "task_from_fields", "validate_fields"]


def validate_fields(door: str, fields: Mapping[str, Any]) -> TaskSpec:
    """``fields`` (TaskSpec field names) as a task: a relative local ``repo`` is taken from
    the caller's current directory (``.`` when not given) and the id is fixed now, so the
    caller knows it before the run exists. ``InputError`` ("<door>: field 'x' = ...")."""
    data: dict[str, Any] = {"repo": ".", **fields}
    if "id" not in data:
        data["id"] = new_task_id()
    data = resolve_repo_paths(data, Path.cwd())
    try:
        return TaskSpec.model_validate(data)
    except ValidationError as exc:
        problems = describe_validation_error(exc)
        field = problems[0][0] if problems else None
        value = data.get(field) if field else None
        raise InputError(
            f"{door}: " + "; ".join(text for _, text in problems), field=field, value=value
        ) from exc


def check_repos(door: str, spec: TaskSpec) -> None:
    """Every local repository (the task's and its subtasks') exists, is a git repository and
    has the ref; ``InputError`` ("<door>: repo ...") otherwise. Reads only."""
    for repo, ref in dict.fromkeys((t.repo, t.ref) for t in [spec, *spec.expanded_subtasks()]):
        try:
            check_local_source(repo, ref)
        except InputError as exc:
            raise InputError(f"{door}: {exc}", field=exc.field, value=exc.value) from exc


def task_from_fields(door: str, fields: Mapping[str, Any]) -> TaskSpec:
    """``validate_fields`` then ``check_repos``: a task ready to run or submit."""
    spec = validate_fields(door, fields)
    check_repos(door, spec)
    return spec
