"""Conductor's error tree, arranged by what failed. Messages say what failed, show the value,
and say the fix; fields carry the same facts for code. Callers match classes, never text.

    ConductorError                  anything Conductor raises on purpose (exit 1)
    ├── InputError                  what the user gave is unusable (exit 2, nothing created)
    │   ├── TaskFileError           a task file: missing, not YAML, not a valid task (path)
    │   ├── NotFoundError           an id or name that does not exist (a task, a run)
    │   ├── RepoUnreadableError     git cannot read the repository here (another owner...)
    │   └── ServerNotRunningError   the Prefect API does not answer (url)
    ├── WorkspaceError              a git operation on a workspace (stderr_tail)
    ├── AgentError                  the agent could not start or misbehaved (agent_exit_code)
    │   └── flows.task_flow.AgentCrashed    it died without a result: worth a retry
    ├── DaemonError                 a stack process did not start or get ready (name, log_tail)
    └── ApiTimeoutError             the Prefect API did not answer in time

Every error pickles with its fields (they cross process boundaries in Prefect): ``__reduce__``
rebuilds the instance without calling ``__init__`` again.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AgentError",
    "ApiTimeoutError",
    "ConductorError",
    "DaemonError",
    "InputError",
    "NotFoundError",
    "RepoUnreadableError",
    "ServerNotRunningError",
    "TaskFileError",
    "WorkspaceError",
]


def _restore(cls: type[ConductorError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class ConductorError(Exception):
    """Root of every error Conductor raises on purpose. ``exit_code`` is the CLI's."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class InputError(ConductorError):
    """The user gave something unusable: exit 2, nothing created."""

    exit_code = 2

    def __init__(self, message: str, *, field: str | None = None, value: object = None) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


class TaskFileError(InputError):
    """A task file is missing, not YAML, or not a valid task."""

    def __init__(self, path: str, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{path}: {message}", field=field)
        self.path = path


class NotFoundError(InputError):
    """An id or name that does not exist (a task, a run)."""


class RepoUnreadableError(InputError):
    """Git cannot use a repository here (e.g. owned by another user): only the worker that
    runs the task may be able to."""


class ServerNotRunningError(InputError):
    """The Prefect API cannot be reached."""

    def __init__(self, url: str) -> None:
        super().__init__(
            f"the Conductor server is not running (no answer from {url}); "
            "start it with `conductor up`, or set CONDUCTOR_API_URL to a running Prefect API"
        )
        self.url = url


class WorkspaceError(ConductorError):
    """A git operation on a workspace failed."""

    def __init__(self, message: str, *, stderr_tail: str = "") -> None:
        super().__init__(message + (f": {stderr_tail.strip()}" if stderr_tail.strip() else ""))
        self.stderr_tail = stderr_tail


class AgentError(ConductorError):
    """The agent could not be started or misbehaved beyond its result."""

    def __init__(
        self, message: str, *, exit_code: int | None = None, stderr_tail: str = ""
    ) -> None:
        super().__init__(message)
        self.agent_exit_code = exit_code
        self.stderr_tail = stderr_tail


class DaemonError(ConductorError):
    """A daemon could not be started, or did not become ready."""

    def __init__(self, message: str, *, name: str, log_tail: str = "") -> None:
        tail = log_tail.strip()
        super().__init__(message + (f"\n--- last lines of its log ---\n{tail}" if tail else ""))
        self.name = name
        self.log_tail = log_tail


class ApiTimeoutError(ConductorError):
    """The Prefect API did not answer in time."""
