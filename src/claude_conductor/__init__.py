"""Claude Conductor: run many Claude Code agents in parallel, orchestrated by Prefect 3.

The public Python API, for use inside your own Prefect flows (see the README's "Use it from
your own Prefect flows")::

    from claude_conductor import agent_task, run_agent_task, submit_agent_task

- ``run_agent_task(**fields)``: run one task inside the calling flow (a ``conductor-task``
  subflow: prepare-workspace, run-agent, verify, collect-result); returns a ``TaskResult``.
- ``submit_agent_task(**fields)``: send one task to the agent pool (``run_deployment`` under
  the hood); returns an ``AgentTaskHandle`` to await, ``poll()`` or ``cancel()``.
- ``@agent_task(**fields)``: a function that returns a prompt becomes a call that runs an agent
  (``await`` it in async flows, call it in sync ones, ``.submit(...)`` it to the pool).
- ``arun_agent_task`` / ``asubmit_agent_task``: the same for async code, always coroutines.
- ``TaskSpec``, ``TaskResult``, ``TaskStatus``: the task, its result, how it ended.
- ``InputError``: what every door raises for bad input (``field``, ``value``; exit code 2).

The keyword arguments are ``TaskSpec``'s fields. Names load on first use, so importing the
package stays cheap (no Prefect until an API function is used).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from claude_conductor.api import (
        AgentTask,
        AgentTaskHandle,
        agent_task,
        arun_agent_task,
        asubmit_agent_task,
        run_agent_task,
        submit_agent_task,
    )
    from claude_conductor.errors import InputError
    from claude_conductor.models import TaskResult, TaskSpec, TaskStatus

__version__ = "0.1.0"
__all__ = [
    "AgentTask",
    "AgentTaskHandle",
    "InputError",
    "TaskResult",
    "TaskSpec",
    "TaskStatus",
    "__version__",
    "agent_task",
    "arun_agent_task",
    "asubmit_agent_task",
    "run_agent_task",
    "submit_agent_task",
]

_HOMES: dict[str, str] = {
    "AgentTask": "claude_conductor.api.decorator",
    "AgentTaskHandle": "claude_conductor.api.submit",
    "agent_task": "claude_conductor.api.decorator",
    "arun_agent_task": "claude_conductor.api.run",
    "asubmit_agent_task": "claude_conductor.api.submit",
    "run_agent_task": "claude_conductor.api.run",
    "submit_agent_task": "claude_conductor.api.submit",
    "InputError": "claude_conductor.errors",
    "TaskResult": "claude_conductor.models",
    "TaskSpec": "claude_conductor.models",
    "TaskStatus": "claude_conductor.models",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'claude_conductor' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
