"""Task files: YAML in, a validated ``TaskSpec`` out, or one clear line per problem.

Task files are untrusted input: the file size, the YAML nesting depth and what aliases expand
to are capped (``MAX_TASK_FILE_BYTES``, ``MAX_YAML_DEPTH``, ``MAX_YAML_NODES``), so a hostile
file fails in bounded time and memory instead of exhausting either.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from claude_conductor.errors import TaskFileError
from claude_conductor.git_urls import is_git_url
from claude_conductor.models import PUBLIC_TASK_FIELDS, TASK_KINDS, TaskSpec, value_excerpt

__all__ = [
    "MAX_TASK_FILE_BYTES",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "describe_validation_error",
    "load_task_file",
    "load_yaml_text",
    "parse_task",
    "resolve_repo_paths",
]

MAX_TASK_FILE_BYTES = 1024 * 1024
"""Largest task file read (1 MiB)."""
MAX_YAML_DEPTH = 32
"""Deepest nesting of lists and mappings, counted after aliases are expanded."""
MAX_YAML_NODES = 100_000
"""Most values a document may hold once its aliases are expanded (stops "billion laughs")."""


class _Limit(Exception):
    """A YAML document over one of the caps; carries the message and where it happened."""

    def __init__(self, message: str, mark: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with a nesting cap while composing (before any recursion)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _Limit(
                    f"nests lists or mappings more than {MAX_YAML_DEPTH} levels deep; "
                    "a task needs only a few",
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _measure(root: yaml.Node) -> None:
    """Count the values and the depth ``root`` expands to, aliases followed, without
    building anything; raise ``_Limit`` past the caps or on a self-referencing alias."""
    sizes: dict[int, tuple[int, int]] = {}
    active: set[int] = set()

    def walk(node: yaml.Node, level: int) -> tuple[int, int]:
        key = id(node)
        if key in sizes:
            size, height = sizes[key]
        else:
            if key in active:
                raise _Limit("has an alias that refers to itself; remove it", node.start_mark)
            active.add(key)
            size, height = 1, 1
            children: list[yaml.Node] = []
            if isinstance(node, yaml.SequenceNode):
                children = list(node.value)
            elif isinstance(node, yaml.MappingNode):
                children = [part for pair in node.value for part in pair]
            for child in children:
                child_size, child_height = walk(child, level + 1)
                size += child_size
                height = max(height, child_height + 1)
                if size > MAX_YAML_NODES:
                    raise _Limit(
                        f"expands to more than {MAX_YAML_NODES} values (YAML aliases "
                        "repeating each other); write the task out without them",
                        node.start_mark,
                    )
            active.discard(key)
            sizes[key] = (size, height)
        if level + height - 1 > MAX_YAML_DEPTH:
            raise _Limit(
                f"nests lists or mappings more than {MAX_YAML_DEPTH} levels deep once its "
                "aliases are expanded; a task needs only a few",
                node.start_mark,
            )
        return size, height

    walk(root, 1)


def _where(mark: Any) -> str:
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _reader_mark(text: str, position: int) -> str:
    before = text[:position]
    line = before.count("\n") + 1
    column = position - (before.rfind("\n") + 1) + 1
    return f" at line {line}, column {column}"


def load_yaml_text(text: str, source: str) -> Any:
    """Parse one YAML document within the caps; ``TaskFileError`` (with line and column)
    for a syntax error or a document over a cap."""
    size = len(text.encode("utf-8"))
    if size > MAX_TASK_FILE_BYTES:
        raise TaskFileError(
            source,
            f"is {size} bytes, more than the limit of {MAX_TASK_FILE_BYTES} bytes "
            f"({MAX_TASK_FILE_BYTES // 1024} KiB); put large material in files in the repository",
        )
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text)  # checks the characters at once
        node = loader.get_single_node()
        if node is None:
            return None
        _measure(node)
        return loader.construct_document(node)
    except _Limit as exc:
        raise TaskFileError(source, f"YAML{_where(exc.mark)} {exc.message}") from None
    except yaml.reader.ReaderError as exc:
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        raise TaskFileError(
            source,
            f"invalid YAML{_reader_mark(text, exc.position)}: the control character {char} "
            'is not allowed in YAML; remove it (write it as an escape like "\\t" in a '
            "double-quoted string if it is meant)",
        ) from exc
    except yaml.MarkedYAMLError as exc:
        problem = exc.problem or "syntax error"
        context = ""
        if exc.context:
            context = f" ({exc.context}{_where(exc.context_mark).replace(' at', ' started at')})"
        raise TaskFileError(
            source, f"invalid YAML{_where(exc.problem_mark)}: {problem}{context}"
        ) from exc
    except yaml.YAMLError as exc:
        raise TaskFileError(source, f"invalid YAML: {exc}") from exc
    finally:
        if loader is not None:
            loader.dispose()


_ALLOWED_HINTS: dict[str, str] = {
    "kind": "one of " + ", ".join(TASK_KINDS),
    "timeout_seconds": "a number of seconds greater than 0 (at most 86400)",
    "max_turns": "a whole number greater than 0",
    "max_budget_usd": "an amount in US dollars greater than 0",
    "priority": "a whole number from 1 (lowest) to 10 (most urgent)",
    "retries": "a whole number from 0 to 10 (not true/false)",
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
            problems.append((field, _unknown_field(field, leaf)))
            continue
        if msg.startswith("field '"):
            # Cross-field rules already name their field (inside a subtask: prefix its path).
            name = msg.split("'", 2)[1]
            full = f"{field}.{name}" if field else name
            problems.append((full, f"field {full!r}" + msg.split("'", 2)[2][1:]))
            continue
        hint = _ALLOWED_HINTS.get(leaf)
        value = err.get("input")
        text = f"field {field!r} = {value_excerpt(value)}: {msg}"
        if hint:
            text += f" (allowed: {hint})"
        problems.append((field, text))
    return problems


def _unknown_field(field: str, leaf: str) -> str:
    shown = value_excerpt(leaf, 40)
    close = difflib.get_close_matches(leaf, PUBLIC_TASK_FIELDS, n=1, cutoff=0.6)
    if close:
        return f"field {field!r}: unknown field {shown}; did you mean {close[0]!r}?"
    return (
        f"field {value_excerpt(field, 40)}: unknown field {shown}; remove it "
        "(the task fields are listed under 'Using it' in the README)"
    )


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
    bad_keys = [k for k in merged if not isinstance(k, str)]
    if bad_keys:
        raise TaskFileError(
            source,
            f"field names must be text, got {value_excerpt(bad_keys[0], 40)}; "
            "write fields as `name: value`",
            field=str(bad_keys[0])[:40],
        )
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
        with file.open("rb") as handle:
            raw = handle.read(MAX_TASK_FILE_BYTES + 1)
    except OSError as exc:
        raise TaskFileError(shown, f"cannot be read ({exc.strerror or exc})") from exc
    if len(raw) > MAX_TASK_FILE_BYTES:
        raise TaskFileError(
            shown,
            f"is larger than the limit of {MAX_TASK_FILE_BYTES} bytes "
            f"({MAX_TASK_FILE_BYTES // 1024} KiB); put large material in files in the repository",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TaskFileError(
            shown, f"is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from exc
    data = load_yaml_text(text, shown)
    if data is None:
        raise TaskFileError(shown, "is empty; a task needs at least a kind and a prompt")
    return parse_task(
        resolve_repo_paths(data, file.resolve().parent), source=shown, defaults=defaults
    )


def resolve_repo_paths(data: Any, base: Path) -> Any:
    """The raw mapping with each relative local ``repo`` (subtasks too) made absolute against
    ``base`` (a task file's folder; the caller's directory for the Python API), before
    validation (so ``files`` can be checked against it); a subtask without ``repo`` still
    inherits its parent's."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    repo = out.get("repo")
    if isinstance(repo, str) and repo.strip() and "\x00" not in repo and not is_git_url(repo):
        path = Path(repo).expanduser()
        out["repo"] = str(path if path.is_absolute() else (base / path).resolve())
    if isinstance(out.get("subtasks"), list):
        out["subtasks"] = [resolve_repo_paths(sub, base) for sub in out["subtasks"]]
    return out
