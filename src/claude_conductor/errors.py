"""Conductor's error tree. Messages say what failed, show the value, and say the fix."""

from __future__ import annotations

__all__ = [
    "AgentError",
    "ConductorError",
    "InputError",
    "NotFoundError",
    "ServerNotRunningError",
    "TaskFileError",
    "WorkspaceError",
]


class ConductorError(Exception):
    """Root of every error Conductor raises on purpose. ``exit_code`` is the CLI's."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


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
