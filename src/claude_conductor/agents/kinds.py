"""What each task kind asks of the agent: its instructions and the tools it may use.

Read-only kinds (``code_review``, ``analysis``) run in permission mode ``default`` with only
read tools allowed: a write the model attempts anyway is refused by the CLI itself and reported
as a permission denial (the task then ends ``needs_attention``). Editing kinds run in
``acceptEdits`` with the editing tools and Bash allowed. A task's own ``permission_mode``,
``allowed_tools`` and ``disallowed_tools`` override the kind's defaults.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from claude_conductor.errors import InputError
from claude_conductor.models import PermissionMode, TaskKind, TaskSpec

__all__ = [
    "EDIT_TOOLS",
    "HEADLESS_SYSTEM_PROMPT",
    "READ_ONLY_KINDS",
    "READ_TOOLS",
    "ToolPolicy",
    "policy_for",
    "render_prompt",
]

READ_ONLY_KINDS: frozenset[TaskKind] = frozenset({"code_review", "analysis"})

READ_TOOLS: tuple[str, ...] = (
    "Read",
    "Grep",
    "Glob",
    "LS",
    "NotebookRead",
    "TodoWrite",
    # Bash only for commands that read. The CLI still refuses redirections (`> file`) and
    # chained commands that are not covered by a rule.
    "Bash(git status:*)",
    "Bash(git diff:*)",
    "Bash(git log:*)",
    "Bash(git show:*)",
    "Bash(git blame:*)",
    "Bash(grep:*)",
    "Bash(rg:*)",
    "Bash(ls:*)",
    "Bash(cat:*)",
    "Bash(head:*)",
    "Bash(tail:*)",
    "Bash(wc:*)",
)
"""Tools a read-only agent may use without asking."""

EDIT_TOOLS: tuple[str, ...] = (
    "Read",
    "Grep",
    "Glob",
    "LS",
    "NotebookRead",
    "TodoWrite",
    "Write",
    "Edit",
    "MultiEdit",
    "NotebookEdit",
    "Bash",
)
"""Tools an editing agent may use without asking."""

_ALWAYS_DISALLOWED: tuple[str, ...] = (
    # Work that would outlive the agent's process, or worktrees Conductor does not own.
    "CronCreate",
    "ScheduleWakeup",
    "EnterWorktree",
    "ExitWorktree",
    # They run in the CLI, outside the Bash sandbox: a network route around it (to any host,
    # loopback services such as the Prefect API included).
    "WebFetch",
    "WebSearch",
)

HEADLESS_SYSTEM_PROMPT = (
    "You are running headless under Claude Conductor, as one of several agents working in "
    "parallel. Nobody can answer questions or approve anything during the run: do not ask, "
    "decide sensibly and say what you assumed. Stay inside the current working directory. "
    "Do not commit, push, or create branches or worktrees; Conductor records your changes. "
    "End with a short summary of what you did and anything left to do."
)
"""Appended to the CLI's own system prompt for every agent."""


class ToolPolicy(BaseModel):
    """How the CLI may use tools for one task."""

    model_config = ConfigDict(frozen=True)

    permission_mode: PermissionMode = Field(description="The CLI's --permission-mode.")
    allowed_tools: tuple[str, ...] = Field(
        default=(), description="Tools used without asking (--allowedTools)."
    )
    disallowed_tools: tuple[str, ...] = Field(
        default=(), description="Tools never used (--disallowedTools)."
    )

    @property
    def read_only(self) -> bool:
        """True when nothing allowed can change files without being refused."""
        writes = {"Write", "Edit", "MultiEdit", "NotebookEdit", "Bash"}
        return self.permission_mode in ("default", "plan") and not writes & set(self.allowed_tools)


_INSTRUCTIONS: dict[TaskKind, str] = {
    "code_review": (
        "Review the code described below. This is a READ-ONLY task: do not create, edit or "
        "delete files and do not run commands that change anything; edits will be refused.\n"
        "Report your findings as your final answer: first a one-paragraph summary, then each "
        "finding as `path:line` - severity (high, medium, low) - what is wrong - a concrete "
        "fix. Say plainly when you find nothing significant."
    ),
    "analysis": (
        "Analyse the code described below and answer the question. This is a READ-ONLY task: "
        "do not create, edit or delete files and do not run commands that change anything; "
        "edits will be refused.\n"
        "Report your findings as your final answer, citing `path:line` for every claim."
    ),
    "refactor": (
        "Refactor the code as described below. Keep behaviour unchanged unless the task says "
        "otherwise, keep the change focused, follow the code's existing style, and run the "
        "project's tests if there are any. Edit the files in place."
    ),
    "test_generation": (
        "Write tests as described below. Follow the project's existing test layout and "
        "framework (look for one first), cover normal cases, edge cases and errors, and run "
        "the new tests to make sure they pass. Do not change the code under test unless the "
        "task says so; report any bug the tests uncover."
    ),
    "generic": (
        "Do the task described below in this repository. Edit files in place, keep the change "
        "focused, and check your work (run the tests if there are any)."
    ),
}


def _kind_of(spec: TaskSpec) -> TaskKind:
    if spec.kind == "command":
        raise InputError(
            f"task {spec.id!r} has kind 'command': it runs its shell command "
            f"({spec.command!r}) without an agent, so it has no prompt or tool policy",
            field="kind",
            value=spec.kind,
        )
    return spec.kind


def policy_for(spec: TaskSpec) -> ToolPolicy:
    """The kind's tool policy with the task's own overrides applied."""
    kind = _kind_of(spec)
    read_only = kind in READ_ONLY_KINDS
    mode: PermissionMode = spec.permission_mode or ("default" if read_only else "acceptEdits")
    if spec.allowed_tools is not None:
        allowed = tuple(spec.allowed_tools)
    else:
        allowed = READ_TOOLS if read_only else EDIT_TOOLS
    disallowed = tuple(dict.fromkeys((*_ALWAYS_DISALLOWED, *spec.disallowed_tools)))
    allowed = tuple(tool for tool in allowed if tool not in disallowed)
    return ToolPolicy(permission_mode=mode, allowed_tools=allowed, disallowed_tools=disallowed)


def render_prompt(spec: TaskSpec) -> str:
    """The prompt the agent gets: the kind's instructions around the user's own words.

    The user's prompt is kept verbatim (markers such as ``[script:NAME]`` included).
    """
    kind = _kind_of(spec)
    parts = [_INSTRUCTIONS[kind]]
    if spec.title.strip():
        parts.append(f"Task: {spec.title.strip()}")
    if spec.files:
        listed = "\n".join(f"- {path}" for path in spec.files)
        parts.append(f"Focus on these files (read others as needed):\n{listed}")
    parts.append(f"Instructions:\n{spec.prompt.strip()}")
    return "\n\n".join(parts)
