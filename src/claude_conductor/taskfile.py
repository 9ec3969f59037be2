"""Task files: YAML in, a validated ``TaskSpec`` out, or one clear line per problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from claude_conductor.errors import TaskFileError
from claude_conductor.git_urls import is_git_url
from claude_conductor.models import TASK_KINDS, TaskSpec

__all__ = ["describe_validation_error", "load_task_file", "parse_task"]

_ALLOWED_HINTS: dict[str, str] = {
    "kind": "one of " + ", ".join(TASK_KINDS),
    "timeout_seconds": "a number of seconds greater than 0 (at most 86400)",
    "max_turns": "a whole number greater than 0",
    "max_budget_usd": "an amount in US dollars greater than 0",
    "priority": "a whole number from 1 (lowest) to 10 (most urgent)",
    "retries": "a whole number from 0 to 10",
    "permission_mode": "one of default, acceptEdits, bypassPermissions, plan",
    "files": "a list of paths",
    "tags": "a list of words",
}


def describe_validation_error(exc: ValidationError) -> list[tuple[str, str]]:
    """Turn pydantic's errors into ``(field, message)`` pairs a person can act on."""
    problems: list[tuple[str, str]] = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        field = ".".join(loc)
        leaf = loc[-1] if loc else ""
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(sorted(TaskSpec.model_fields))
            problems.append((field, f"unknown field {leaf!r}; allowed fields: {allowed}"))
            continue
        if not field and msg.startswith("field '"):
            # Cross-field rules already name their field.
            name = msg.split("'", 2)[1]
            problems.append((name, msg))
            continue
        hint = _ALLOWED_HINTS.get(leaf)
        value = err.get("input")
        text = f"field {field!r} = {value!r}: {msg}"
        if hint:
            text += f" (allowed: {hint})"
        problems.append((field, text))
    return problems


def parse_task(
    data: Any, *, source: str = "<task>", defaults: dict[str, Any] | None = None
) -> TaskSpec:
    """Validate already-loaded data (a mapping) into a ``TaskSpec``."""
    if not isinstance(data, dict):
        raise TaskFileError(
            source,
            f"a task file must be a YAML mapping of fields (kind, prompt, repo, ...), "
            f"got {type(data).__name__}",
        )
    merged = {**(defaults or {}), **data}
    try:
        return TaskSpec.model_validate(merged)
    except ValidationError as exc:
        problems = describe_validation_error(exc)
        field = problems[0][0] if problems else None
        raise TaskFileError(source, "; ".join(text for _, text in problems), field=field) from exc


def load_task_file(path: Path | str, *, defaults: dict[str, Any] | None = None) -> TaskSpec:
    """Read a YAML task file. A relative ``repo`` is taken relative to the file's folder."""
    file = Path(path)
    shown = str(path)
    if not file.exists():
        raise TaskFileError(shown, "no such file; give the path of a task YAML file")
    if not file.is_file():
        raise TaskFileError(shown, "is not a file; give the path of a task YAML file")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TaskFileError(shown, f"cannot be read ({exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise TaskFileError(shown, f"invalid YAML{where}: {problem}") from exc
    if data is None:
        raise TaskFileError(shown, "is empty; a task needs at least a kind and a prompt")
    spec = parse_task(data, source=shown, defaults=defaults)
    return _resolve_repo_paths(spec, file.resolve().parent)


def _resolve_repo_paths(spec: TaskSpec, base: Path) -> TaskSpec:
    subtasks = [_resolve_repo_paths(s, base) for s in spec.subtasks]
    update: dict[str, Any] = {"subtasks": subtasks}
    repo = spec.repo
    if "repo" in spec.model_fields_set and not is_git_url(repo):
        path = Path(repo).expanduser()
        update["repo"] = str(path if path.is_absolute() else (base / path).resolve())
    # model_copy keeps model_fields_set, so subtasks still inherit an unset repo.
    return spec.model_copy(update=update)
