"""The steps a scripted model plays, and the built-in ``demo`` script.

A script is a list of steps; step ``n`` answers the request whose conversation already holds
``n`` assistant messages. A step is a value made by one of the constructors below, or a
callable ``(request_json) -> step`` for behaviour that depends on what the CLI sent (for
example the content of a tool result). Nothing here talks HTTP: see ``scripted_model``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ErrorStep",
    "Request",
    "SlowStep",
    "StallStep",
    "Step",
    "StepLike",
    "TextStep",
    "ToolUseStep",
    "absolutize",
    "assistant_count",
    "demo_steps",
    "ensure_sequence",
    "error",
    "last_tool_result",
    "request_cwd",
    "request_text",
    "slow",
    "stall",
    "text",
    "tool_use",
]

Request = dict[str, Any]
"""The JSON body of one ``POST /v1/messages`` as the CLI sent it."""

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_CWD_RE = re.compile(r"Primary working directory: (\S[^\n]*)")
_PATH_KEYS = ("file_path", "notebook_path")


@dataclass(frozen=True)
class Step:
    """Base of every step. ``input_tokens`` None: estimated from the request's size."""

    input_tokens: int | None = None
    output_tokens: int = 50


@dataclass(frozen=True)
class TextStep(Step):
    """Answer with text and end the turn (the agent's final answer)."""

    text: str = ""
    stop_reason: str = "end_turn"


@dataclass(frozen=True)
class ToolUseStep(Step):
    """Ask the CLI to run tools; it comes back with their results in the next request."""

    calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    text: str | None = None
    absolute_paths: bool = True


@dataclass(frozen=True)
class ErrorStep(Step):
    """Answer with an HTTP error in the Messages API's error shape."""

    status: int = 500
    message: str = "scripted error"
    error_type: str = "api_error"
    retryable: bool = False


@dataclass(frozen=True)
class StallStep(Step):
    """Accept the request and send nothing (before or after the stream started)."""

    seconds: float = 3600.0
    mid_stream: bool = False


@dataclass(frozen=True)
class SlowStep(Step):
    """Stream text in chunks with a pause between them, then end the turn."""

    chunks: tuple[str, ...] = ()
    delay_seconds: float = 0.5


StepLike = Step | Callable[[Request], Step]


def text(answer: str, *, input_tokens: int | None = None, output_tokens: int = 50) -> TextStep:
    """The model answers ``answer`` and ends its turn."""
    return TextStep(text=answer, input_tokens=input_tokens, output_tokens=output_tokens)


def tool_use(
    name: str,
    tool_input: dict[str, Any],
    *more: tuple[str, dict[str, Any]],
    say: str | None = None,
    absolute_paths: bool = True,
    input_tokens: int | None = None,
    output_tokens: int = 50,
) -> ToolUseStep:
    """The model calls ``name`` with ``tool_input`` (and any ``(name, input)`` in ``more``).

    Relative ``file_path``/``notebook_path`` values are made absolute against the working
    directory the CLI reports in its request, as a real model does (``absolute_paths``).
    """
    return ToolUseStep(
        calls=((name, tool_input), *more),
        text=say,
        absolute_paths=absolute_paths,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )


def error(status: int, message: str | None = None, *, retryable: bool = False) -> ErrorStep:
    """The API answers HTTP ``status`` (401, 429, 500, 529...) with an error body."""
    kind = _ERROR_TYPES.get(status, "api_error")
    return ErrorStep(
        status=status, message=message or f"scripted {kind}", error_type=kind, retryable=retryable
    )


def stall(seconds: float = 3600.0, *, mid_stream: bool = False) -> StallStep:
    """The API accepts the request, then goes silent for ``seconds`` and drops it."""
    return StallStep(seconds=seconds, mid_stream=mid_stream)


def slow(answer: str, *, chunks: int = 5, delay_seconds: float = 0.5) -> SlowStep:
    """Like ``text`` but streamed in ``chunks`` pieces ``delay_seconds`` apart."""
    size = max(1, -(-len(answer) // max(1, chunks)))
    pieces = tuple(answer[i : i + size] for i in range(0, len(answer), size)) or ("",)
    return SlowStep(chunks=pieces, delay_seconds=delay_seconds)


# --------------------------------------------------------------------------- request helpers


def assistant_count(request: Request) -> int:
    """How many assistant messages the conversation holds: the index of the step to play."""
    messages = request.get("messages") or []
    return sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant")


def _block_texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    texts: list[str] = []
    if isinstance(content, list):
        for block in content:
            if isinstance(block, dict):
                if isinstance(block.get("text"), str):
                    texts.append(block["text"])
                elif "content" in block:
                    texts.extend(_block_texts(block["content"]))
    return texts


def request_text(request: Request, *, first_user_only: bool = False) -> str:
    """All text of the request's messages (or only of the first user message)."""
    texts: list[str] = []
    for message in request.get("messages") or []:
        if not isinstance(message, dict):
            continue
        if first_user_only and message.get("role") != "user":
            continue
        texts.extend(_block_texts(message.get("content")))
        if first_user_only:
            break
    return "\n".join(texts)


def request_cwd(request: Request) -> str | None:
    """The agent's working directory, as the CLI describes its environment to the model."""
    chunks = _block_texts(request.get("system"))
    for message in request.get("messages") or []:
        if isinstance(message, dict):
            chunks.extend(_block_texts(message.get("content")))
    for chunk in chunks:
        match = _CWD_RE.search(chunk)
        if match:
            return match.group(1).strip()
    return None


def last_tool_result(request: Request) -> tuple[str, bool] | None:
    """The text and ``is_error`` flag of the newest tool result, if the last message has one."""
    messages = request.get("messages") or []
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            for block in reversed(content):
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    body = "\n".join(_block_texts(block.get("content")))
                    return body, bool(block.get("is_error"))
        return None
    return None


def absolutize(tool_input: dict[str, Any], cwd: str | None) -> dict[str, Any]:
    """``tool_input`` with relative file paths joined to ``cwd``."""
    if not cwd:
        return tool_input
    fixed = dict(tool_input)
    for key in _PATH_KEYS:
        value = fixed.get(key)
        if isinstance(value, str) and value and not value.startswith("/"):
            fixed[key] = f"{cwd.rstrip('/')}/{value}"
    return fixed


# --------------------------------------------------------------------------- the demo script

_GREET_PY = '''"""A tiny greeting helper."""


def greet(name: str) -> str:
    """Return a friendly greeting for ``name``."""
    return f"Hello, {name}!"
'''
_MAIN_PY = '''"""Entry point of the demo project."""

from greet import greet

if __name__ == "__main__":
    print(greet("world"))
'''
_READ_LINE_RE = re.compile(r"^\s*\d+\t(.*)$")
_PRINT_LITERAL_RE = re.compile(r"""^(\s*)print\((["'])[^"']*\2\)\s*$""")


def _numbered_text(read_output: str) -> str | None:
    """The file content behind the Read tool's ``cat -n`` style output, if it parses."""
    lines: list[str] = []
    for raw in read_output.splitlines():
        match = _READ_LINE_RE.match(raw)
        if not match:
            break
        lines.append(match.group(1))
    return "\n".join(lines) if lines else None


def _greeting_main(original: str) -> str:
    """``original`` main.py importing ``greet`` and printing ``greet("world")`` instead of a
    hard-coded greeting (or in addition, when it has none)."""
    lines = original.splitlines()
    replaced = False
    for number, line in enumerate(lines):
        match = _PRINT_LITERAL_RE.match(line)
        if match:
            lines[number] = f'{match.group(1)}print(greet("world"))'
            replaced = True
            break
    insert_at = 0
    if lines and lines[0].lstrip().startswith(('"""', "'''")):
        quote = lines[0].lstrip()[:3]
        insert_at = 1
        if lines[0].count(quote) < 2:
            while insert_at < len(lines) and quote not in lines[insert_at]:
                insert_at += 1
            insert_at += 1
    head, tail = lines[:insert_at], lines[insert_at:]
    while tail and not tail[0].strip():
        tail.pop(0)
    updated = [*head, *([""] if head else []), "from greet import greet", "", "", *tail]
    if not replaced:
        updated += ["", 'print(greet("world"))']
    return "\n".join(updated).rstrip("\n") + "\n"


def _edit_main(request: Request) -> Step:
    """Step 3 of the demo: edit main.py from what Read returned (or write it if missing)."""
    seen = last_tool_result(request)
    original = _numbered_text(seen[0]) if seen and not seen[1] else None
    if original is not None and "greet(" in original:
        return text("main.py already uses greet(); nothing left to change.")
    if original is None or not original.strip():
        return tool_use(
            "Write",
            {"file_path": "main.py", "content": _MAIN_PY},
            say="main.py is missing or empty, so I'll create it.",
        )
    return tool_use(
        "Edit",
        {"file_path": "main.py", "old_string": original, "new_string": _greeting_main(original)},
        say="Now I'll make main.py use the helper.",
    )


def demo_steps() -> list[StepLike]:
    """Add a greeting helper: write greet.py, read and edit main.py, summarise."""
    return [
        tool_use(
            "Write",
            {"file_path": "greet.py", "content": _GREET_PY},
            say="I'll add a small greeting helper in greet.py.",
        ),
        tool_use("Read", {"file_path": "main.py"}, say="Let me look at main.py."),
        _edit_main,
        text(
            "Added `greet.py` with `greet(name)`, which returns a friendly greeting, and "
            "changed `main.py` to import it and print `greet('world')`.\n\n"
            "(This answer came from Conductor's scripted demo model, not a real model.)"
        ),
    ]


def ensure_sequence(steps: Sequence[StepLike]) -> tuple[StepLike, ...]:
    """Validate a script: every item is a ``Step`` or a callable."""
    for index, step in enumerate(steps):
        if not (isinstance(step, Step) or callable(step)):
            raise TypeError(f"step {index} is {step!r}: use text(), tool_use(), error(), ...")
    return tuple(steps)
