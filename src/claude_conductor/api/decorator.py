"""``@agent_task``: a function that returns a prompt becomes a call that runs an agent.

    @agent_task(kind="test_generation", repo=".", max_budget_usd=1.0)
    def tests_for(path: str) -> str:
        return f"Write pytest tests for {path}"

    await tests_for("src/app.py")              # in an async flow: a conductor-task subflow
    tests_for("src/app.py")                    # in a sync flow: the same, to its end
    handle = tests_for.submit("src/app.py")    # on the agent pool instead

The decorator's keywords are ``TaskSpec`` fields, checked when the decorator runs; each call is
a task of its own (its own id and branch). The function may be sync or async; for
``kind="command"`` it returns the command instead of a prompt.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Generic, ParamSpec

from claude_conductor.api.dispatch import sync_or_awaitable
from claude_conductor.api.fields import check_repos, validate_fields
from claude_conductor.api.run import run_task
from claude_conductor.api.submit import AgentTaskHandle, submit_task
from claude_conductor.errors import InputError
from claude_conductor.models import TaskResult, TaskSpec

__all__ = ["AgentTask", "agent_task"]

P = ParamSpec("P")

_DOOR = "@agent_task"
_SET_PER_CALL = ("id", "prompt", "command")


class AgentTask(Generic[P]):
    """What ``@agent_task`` makes of a function: call it to run the task in the calling flow
    (``await`` it in async code), ``submit`` it to send the task to the agent pool; the
    ``a``-prefixed methods are always coroutines."""

    def __init__(self, fn: Callable[P, str | Awaitable[str]], fields: dict[str, Any]) -> None:
        given = sorted(set(fields) & set(_SET_PER_CALL))
        if given:
            raise InputError(
                f"{_DOOR} on {fn.__qualname__}: field {given[0]!r} cannot be fixed in the "
                "decorator: each call is its own task, and the function returns its "
                f"{'command' if fields.get('kind') == 'command' else 'prompt'}; remove it",
                field=given[0],
                value=fields[given[0]],
            )
        self.fn = fn
        self.fields = dict(fields)
        self._what = "command" if fields.get("kind") == "command" else "prompt"
        validate_fields(f"{_DOOR} on {fn.__qualname__}", {**fields, self._what: "(checked)"})
        functools.update_wrapper(self, fn)

    async def _spec(self, *args: P.args, **kwargs: P.kwargs) -> TaskSpec:
        text: Any = self.fn(*args, **kwargs)
        if inspect.isawaitable(text):
            text = await text
        door = f"{_DOOR} on {self.fn.__qualname__}"
        if not isinstance(text, str):
            raise InputError(
                f"{door}: the function returned {type(text).__name__}; return the task's "
                f"{self._what} as a string",
                field=self._what,
                value=text,
            )
        spec = validate_fields(door, {**self.fields, self._what: text})
        check_repos(door, spec)
        return spec

    async def aio(self, *args: P.args, **kwargs: P.kwargs) -> TaskResult:
        """Run the task in the calling flow (a ``conductor-task`` subflow); its result."""
        return await run_task(await self._spec(*args, **kwargs))

    async def asubmit(self, *args: P.args, **kwargs: P.kwargs) -> AgentTaskHandle:
        """Send the task to the agent pool; a handle on it."""
        return await submit_task(await self._spec(*args, **kwargs))

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """``aio`` in async code (``await`` it, or gather several); its result in sync code."""
        return sync_or_awaitable(self.aio(*args, **kwargs))

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """``asubmit`` in async code; the handle in sync code."""
        return sync_or_awaitable(self.asubmit(*args, **kwargs))

    def __repr__(self) -> str:
        return f"AgentTask({self.fn.__qualname__}, {self.fields!r})"


def agent_task(
    **fields: Any,
) -> Callable[[Callable[P, str | Awaitable[str]]], AgentTask[P]]:
    """Turn a function that returns a prompt into an agent task (see the module docstring).
    Keyword arguments are ``TaskSpec`` fields; bad ones raise ``InputError`` here, when the
    decorator runs, naming the field, the value and the fix."""

    def decorate(fn: Callable[P, str | Awaitable[str]]) -> AgentTask[P]:
        return AgentTask(fn, fields)

    return decorate
