"""The vocabulary every part of Conductor speaks: tasks, results and agent events.

This module imports nothing of ours. Values are frozen pydantic models; closed sets are
``Literal`` or ``Enum``. External data (task files, the CLI's stream) is parsed into these
types once, at the edge.
"""

from __future__ import annotations

import posixpath
import re
import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "MAX_PROMPT_BYTES",
    "PUBLIC_TASK_FIELDS",
    "TASK_KINDS",
    "AgentEvent",
    "AssistantText",
    "DiffStats",
    "PermissionDenied",
    "PermissionMode",
    "ResultEvent",
    "SystemInit",
    "TaskKind",
    "TaskResult",
    "TaskSpec",
    "TaskStatus",
    "ToolResult",
    "ToolUse",
    "UnknownEvent",
    "VerifyResult",
    "new_task_id",
    "value_excerpt",
]

TaskKind = Literal["code_review", "refactor", "test_generation", "analysis", "generic", "command"]
TASK_KINDS: tuple[str, ...] = (
    "code_review",
    "refactor",
    "test_generation",
    "analysis",
    "generic",
    "command",
)
PermissionMode = Literal["default", "acceptEdits", "bypassPermissions", "plan"]

_TASK_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{2,62}$")

MAX_PROMPT_BYTES = 256 * 1024
"""Largest prompt (UTF-8 bytes) a task may carry; longer work belongs in files in the repo."""

_TEXT_FIELDS = (
    "id",
    "title",
    "prompt",
    "repo",
    "ref",
    "files",
    "model",
    "verify",
    "command",
    "tags",
    "allowed_tools",
    "disallowed_tools",
    "parent_id",
)


def _is_local_path(repo: str) -> bool:
    return not ("://" in repo or (repo.startswith("git@") and ":" in repo))


def new_task_id() -> str:
    """A short, sortable, branch-safe id: ``t-20261124-082539-3f9a1c``."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"t-{stamp}-{secrets.token_hex(3)}"


class TaskStatus(StrEnum):
    """How a task ended. ``needs_attention``: it ran, but the agent was refused something."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    NEEDS_ATTENTION = "needs_attention"


class TaskSpec(BaseModel):
    """One unit of work: a prompt for a Claude Code agent, or a plain command, on a repository."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(
        default_factory=new_task_id,
        description="Task id; also names the branch `conductor/<id>`. Generated when omitted.",
    )
    kind: TaskKind = Field(
        default="generic",
        description="What sort of work: code_review, refactor, test_generation, analysis, "
        "generic, or command (a shell command, no model).",
    )
    title: str = Field(default="", max_length=200, description="A short human title.")
    prompt: str = Field(default="", description="What the agent should do.")
    repo: str = Field(
        default=".", description="A local git repository path or a git URL to work on."
    )
    ref: str | None = Field(
        default=None, description="Branch, tag or commit to start from; default the repo's HEAD."
    )
    files: list[str] = Field(default_factory=list, description="Files to focus on.")
    timeout_seconds: float = Field(
        default=900,
        gt=0,
        le=86400,
        strict=True,
        allow_inf_nan=False,
        description="Wall-clock limit for the agent or command.",
    )
    max_turns: int | None = Field(
        default=30, gt=0, le=1000, strict=True, description="Most agent turns before it is stopped."
    )
    max_budget_usd: float | None = Field(
        default=2.0,
        gt=0,
        le=10000,
        strict=True,
        allow_inf_nan=False,
        description="Most the agent may spend, in US dollars.",
    )
    model: str | None = Field(default=None, description="Model alias or name, e.g. `sonnet`.")
    verify: str | None = Field(
        default=None, description="Shell command run in the workspace after the agent."
    )
    command: str | None = Field(
        default=None, description="For kind=command: the shell command to run instead of an agent."
    )
    priority: int = Field(
        default=5, ge=1, le=10, strict=True, description="1 (lowest) to 10 (most urgent)."
    )
    retries: int = Field(
        default=0, ge=0, le=10, strict=True, description="How often a crashed task is run again."
    )
    tags: list[str] = Field(default_factory=list, description="Free labels for filtering.")
    permission_mode: PermissionMode | None = Field(
        default=None, description="Claude Code permission mode; default set by the task kind."
    )
    allowed_tools: list[str] | None = Field(
        default=None, description="Tools the agent may use; default set by the task kind."
    )
    disallowed_tools: list[str] = Field(
        default_factory=list, description="Tools the agent may never use."
    )
    subtasks: list[TaskSpec] = Field(
        default_factory=list,
        description="Tasks fanned out in parallel; each inherits repo and ref when not set.",
    )
    parent_id: str | None = Field(default=None, description="The fan-out task this belongs to.")

    @field_validator("id", mode="before")
    @classmethod
    def _empty_id_is_generated(cls, value: Any) -> Any:
        """An empty id (a form left blank, JSON null) means "make one", as omitting it does."""
        return new_task_id() if value is None or value == "" else value

    @field_validator("id")
    @classmethod
    def _id_is_branch_safe(cls, value: str) -> str:
        if not _TASK_ID_RE.match(value):
            raise ValueError(
                "must be 3-63 characters of lowercase letters, digits and '-', "
                "starting with a letter or digit (it names a git branch)"
            )
        return value

    @field_validator(*_TEXT_FIELDS)
    @classmethod
    def _no_nul_bytes(cls, value: Any) -> Any:
        texts = value if isinstance(value, list) else [value]
        if any(isinstance(text, str) and "\x00" in text for text in texts):
            raise ValueError(
                "contains a NUL byte (\\x00), which no command line or git ref can carry; remove it"
            )
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt_fits(cls, value: str) -> str:
        size = len(value.encode("utf-8"))
        if size > MAX_PROMPT_BYTES:
            raise ValueError(
                f"is {size} bytes, more than the limit of {MAX_PROMPT_BYTES} bytes "
                f"({MAX_PROMPT_BYTES // 1024} KiB); put the material in a file in the "
                "repository and name it in 'files'"
            )
        return value

    @model_validator(mode="after")
    def _files_inside_repo(self) -> TaskSpec:
        """Focus files stay inside the repository: relative, no ``..`` above the root (an
        absolute path inside a local repository is made relative)."""
        root = posixpath.normpath(self.repo) if _is_local_path(self.repo) else ""
        inside: list[str] = []
        for path in self.files:
            norm = posixpath.normpath(path) if path.strip() else ""
            in_root = posixpath.isabs(root) and root != "/" and norm.startswith(root + "/")
            if posixpath.isabs(norm) and in_root:
                norm = posixpath.relpath(norm, root)
            if not norm or posixpath.isabs(norm) or norm == ".." or norm.startswith("../"):
                raise ValueError(
                    f"field 'files': {value_excerpt(path)} is outside the repository; "
                    "give a path relative to the repository root, e.g. 'src/app.py'"
                )
            inside.append(norm)
        if inside != self.files:
            object.__setattr__(self, "files", inside)  # still validating: not yet frozen
        return self

    @model_validator(mode="after")
    def _kind_needs_its_input(self) -> TaskSpec:
        if self.kind == "command":
            if not (self.command and self.command.strip()):
                raise ValueError(
                    "field 'command': kind 'command' needs a command to run, "
                    "e.g. command: 'pytest -q'"
                )
        elif not self.subtasks and not self.prompt.strip():
            raise ValueError(
                f"field 'prompt': kind {self.kind!r} needs a prompt that says what to do "
                "(or use kind: command with a command)"
            )
        return self

    @property
    def branch(self) -> str:
        return f"conductor/{self.id}"

    def expanded_subtasks(self) -> list[TaskSpec]:
        """Subtasks ready to run: ids ``<parent>-s<n>`` unless given, and the parent's repo,
        ref, limits, model and priority wherever the subtask did not set its own."""
        inherited = (
            "repo",
            "ref",
            "timeout_seconds",
            "max_turns",
            "max_budget_usd",
            "model",
            "priority",
        )
        out: list[TaskSpec] = []
        for n, sub in enumerate(self.subtasks, start=1):
            update: dict[str, Any] = {"parent_id": self.id}
            if "id" not in sub.model_fields_set:
                update["id"] = f"{self.id}-s{n}"[:63]
            for name in inherited:
                if name not in sub.model_fields_set:
                    update[name] = getattr(self, name)
            out.append(sub.model_copy(update=update))
        return out

    @property
    def display_title(self) -> str:
        text = self.title or self.prompt or self.command or self.kind
        first = text.strip().splitlines()[0] if text.strip() else self.kind
        return first[:80]


class DiffStats(BaseModel):
    model_config = ConfigDict(frozen=True)

    files: int = Field(default=0, description="Files changed against the base commit.")
    insertions: int = Field(default=0, description="Lines added.")
    deletions: int = Field(default=0, description="Lines removed.")


class VerifyResult(BaseModel):
    """The outcome of a shell command run in the workspace (verify, or a command task)."""

    model_config = ConfigDict(frozen=True)

    command: str = Field(description="The command as given.")
    exit_code: int | None = Field(description="Its exit code; None when it was stopped.")
    output_tail: str = Field(default="", description="The last lines of stdout and stderr.")
    duration_seconds: float = Field(default=0.0, description="How long it ran.")
    timed_out: bool = Field(default=False, description="Stopped by the task's timeout.")


class TaskResult(BaseModel):
    """Everything a user wants to know about how a task went."""

    model_config = ConfigDict(frozen=True)

    task_id: str = Field(description="The task's id.")
    kind: TaskKind = Field(default="generic", description="The task kind.")
    title: str = Field(default="", description="The task's title.")
    status: TaskStatus = Field(description="How it ended.")
    summary: str = Field(default="", description="The agent's final text (or command output).")
    repo: str = Field(default="", description="The repository as given.")
    branch: str | None = Field(default=None, description="Branch holding the task's commit.")
    base_commit: str | None = Field(default=None, description="Commit the task started from.")
    head_commit: str | None = Field(default=None, description="Tip of the branch after the task.")
    files_changed: list[str] = Field(default_factory=list, description="Paths changed.")
    diff_stats: DiffStats = Field(default_factory=DiffStats, description="Diff size.")
    patch_path: str | None = Field(default=None, description="A .patch file of the changes.")
    cost_usd: float = Field(default=0.0, description="What the agent cost, per the CLI.")
    input_tokens: int = Field(default=0, description="Input tokens (incl. cache) used.")
    output_tokens: int = Field(default=0, description="Output tokens used.")
    num_turns: int = Field(default=0, description="Agent turns taken.")
    session_id: str | None = Field(default=None, description="Claude Code session id.")
    model: str | None = Field(default=None, description="Model the agent used.")
    duration_seconds: float = Field(default=0.0, description="Wall time of the whole task.")
    permission_denials: list[dict[str, Any]] = Field(
        default_factory=list, description="Tool uses the permission mode refused."
    )
    verify: VerifyResult | None = Field(default=None, description="The verify command's outcome.")
    error: str | None = Field(default=None, description="Why it did not succeed, if it did not.")
    transcript_path: str | None = Field(default=None, description="JSONL of the agent's events.")
    workspace_path: str | None = Field(
        default=None, description="Worktree kept for inspection (failed tasks), else None."
    )
    started_at: datetime | None = Field(default=None, description="When the task started.")
    finished_at: datetime | None = Field(default=None, description="When the task ended.")
    subtasks: list[TaskResult] = Field(
        default_factory=list, description="Results of fanned-out subtasks."
    )

    @property
    def ok(self) -> bool:
        return self.status is TaskStatus.SUCCEEDED


PUBLIC_TASK_FIELDS: tuple[str, ...] = tuple(
    name for name in TaskSpec.model_fields if name not in ("parent_id",)
)
"""The fields a task file may set (``parent_id`` is set by fan-out)."""


def value_excerpt(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to about ``limit`` characters for huge values."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = len(value) if isinstance(value, str | bytes | list | dict) else len(text)
    return f"{text[: limit - 1]}… ({size} {'characters' if isinstance(value, str) else 'long'})"


# --------------------------------------------------------------------------- agent events


def _short(text: str, limit: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)

    def describe(self) -> str:
        """One line for a person following the agent (progress lines, run logs)."""
        return self.__class__.__name__


class SystemInit(_Event):
    type: Literal["init"] = "init"
    session_id: str | None = None
    model: str | None = None
    permission_mode: str | None = None
    tools: list[str] = Field(default_factory=list)
    cwd: str | None = None

    def describe(self) -> str:
        return f"agent started (model {self.model or '?'}, mode {self.permission_mode or '?'})"


class AssistantText(_Event):
    type: Literal["text"] = "text"
    text: str

    def describe(self) -> str:
        return f"says: {_short(self.text)}"


class ToolUse(_Event):
    type: Literal["tool_use"] = "tool_use"
    id: str = ""
    name: str
    input: dict[str, Any] = Field(default_factory=dict)

    def describe(self) -> str:
        target = next(
            (
                str(self.input[k])
                for k in ("file_path", "path", "command", "pattern", "url")
                if k in self.input
            ),
            "",
        )
        return f"uses {self.name} {_short(target, 120)}".rstrip()


class ToolResult(_Event):
    type: Literal["tool_result"] = "tool_result"
    tool_use_id: str = ""
    content: str = ""
    is_error: bool = False

    def describe(self) -> str:
        return ("tool error: " if self.is_error else "tool result: ") + _short(self.content, 120)


class PermissionDenied(_Event):
    type: Literal["permission_denied"] = "permission_denied"
    tool_name: str = ""
    detail: dict[str, Any] = Field(default_factory=dict)

    def describe(self) -> str:
        return f"permission denied: {self.tool_name}"


class ResultEvent(_Event):
    """The CLI's last line: the facts the task status is decided from."""

    type: Literal["result"] = "result"
    subtype: str = "success"
    is_error: bool = False
    result: str = ""
    session_id: str | None = None
    num_turns: int = 0
    duration_ms: int = 0
    total_cost_usd: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    permission_denials: list[dict[str, Any]] = Field(default_factory=list)
    api_error_status: int | None = None
    terminal_reason: str | None = None
    model: str | None = None

    def describe(self) -> str:
        return (
            f"finished: {self.subtype}{' (error)' if self.is_error else ''}, "
            f"{self.num_turns} turns, ${self.total_cost_usd:.4f}"
        )


class UnknownEvent(_Event):
    """A line the parser does not know (new CLI event types): kept, never fatal."""

    type: Literal["unknown"] = "unknown"
    raw_type: str = ""
    data: dict[str, Any] = Field(default_factory=dict)

    def describe(self) -> str:
        return f"event {self.raw_type or '?'}"


AgentEvent = Annotated[
    SystemInit
    | AssistantText
    | ToolUse
    | ToolResult
    | PermissionDenied
    | ResultEvent
    | UnknownEvent,
    Field(discriminator="type"),
]
