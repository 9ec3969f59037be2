"""The agent runtime: spawns the real ``claude`` CLI headless, parses its stream, enforces
limits, and runs plain shell commands (verify steps, ``kind: command`` tasks).

| module       | job                                                              |
|--------------|------------------------------------------------------------------|
| ``kinds``    | per task kind: prompt template and tool policy                   |
| ``argv``     | find the binary, build argv and env (pure), redact secrets       |
| ``stream``   | stream-json line -> typed ``AgentEvent``s                        |
| ``status``   | result line + how it ended -> ``TaskStatus`` and a reason (pure) |
| ``process``  | own process group, stop the whole group for sure                 |
| ``shell``    | ``run_shell``: ``/bin/sh -c`` with a timeout and an output tail  |
| ``placement``| where the work runs; ``confinement``/``bubblewrap`` its boundary |
| ``runtime``  | ``run_agent``: one agent run, start to finish                    |
"""

from __future__ import annotations

from claude_conductor.agents.argv import build_argv, build_env, find_claude, redact
from claude_conductor.agents.kinds import ToolPolicy, policy_for, render_prompt
from claude_conductor.agents.runtime import AgentOutcome, run_agent
from claude_conductor.agents.shell import run_shell
from claude_conductor.agents.status import decide_status
from claude_conductor.agents.stream import parse_line

__all__ = [
    "AgentOutcome",
    "ToolPolicy",
    "build_argv",
    "build_env",
    "decide_status",
    "find_claude",
    "parse_line",
    "policy_for",
    "redact",
    "render_prompt",
    "run_agent",
    "run_shell",
]
