"""Conductor inside your own Prefect flows: ``run_agent_task`` (one task in the calling flow),
``submit_agent_task`` (one task on the agent pool, with a handle) and ``@agent_task`` (a
function returning a prompt, turned into an agent task). ``claude_conductor`` re-exports them;
import them from there.
"""

from __future__ import annotations

from claude_conductor.api.decorator import AgentTask, agent_task
from claude_conductor.api.run import arun_agent_task, run_agent_task
from claude_conductor.api.submit import AgentTaskHandle, asubmit_agent_task, submit_agent_task

__all__ = [
    "AgentTask",
    "AgentTaskHandle",
    "agent_task",
    "arun_agent_task",
    "asubmit_agent_task",
    "run_agent_task",
    "submit_agent_task",
]
