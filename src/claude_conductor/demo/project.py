"""The demo: a tiny git repository and a task that asks an agent to change it."""

from __future__ import annotations

import shutil
import subprocess
from importlib import resources
from pathlib import Path

from claude_conductor.models import TaskSpec

__all__ = ["DEMO_PROMPT", "demo_task", "make_demo_repo"]

DEMO_PROMPT = (
    "Add a function greet(name) to a new file greet.py that returns 'Hello, <name>!', "
    "and change main.py to print greet('world') instead of its hard-coded greeting."
)

_GIT_ENV = {
    "GIT_AUTHOR_NAME": "Claude Conductor demo",
    "GIT_AUTHOR_EMAIL": "demo@localhost",
    "GIT_COMMITTER_NAME": "Claude Conductor demo",
    "GIT_COMMITTER_EMAIL": "demo@localhost",
    "GIT_TERMINAL_PROMPT": "0",
}


def make_demo_repo(target: Path) -> Path:
    """Create (or reuse) the demo repository at ``target``; returns its path."""
    if (target / ".git").is_dir():
        return target
    target.mkdir(parents=True, exist_ok=True)
    source = resources.files("claude_conductor.demo") / "project"
    for name in ("main.py", "README.md"):
        with resources.as_file(source / name) as path:
            shutil.copyfile(path, target / name)
    env = {**_base_env(), **_GIT_ENV}
    for args in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "demo project"],
    ):
        subprocess.run(args, cwd=target, env=env, check=True, timeout=30, capture_output=True)
    return target


def demo_task(repo: Path, *, offline: bool, bash: bool = True) -> TaskSpec:
    """The demo task; ``bash=False`` (no sandbox tools on this machine) keeps its agent to
    the file tools, which need no sandbox, and drops the verify command, which would."""
    prompt = DEMO_PROMPT + (" [script:demo]" if offline else "")
    return TaskSpec(
        disallowed_tools=[] if bash else ["Bash"],
        kind="refactor",
        title="Add a greeting helper" + (" (offline demo)" if offline else ""),
        prompt=prompt,
        repo=str(repo),
        files=["main.py"],
        timeout_seconds=300,
        max_turns=10,
        max_budget_usd=1.0,
        verify="python3 main.py" if bash else None,
    )


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
