"""Git worktrees for tasks: resolve the source, create, commit to a branch, diff, clean up.

All functions here block (they run git); callers run them in worker threads.
"""

from __future__ import annotations

from claude_conductor.workspaces.source import SourceRepo, is_git_url, resolve_source
from claude_conductor.workspaces.worktree import (
    Workspace,
    WorkspaceChanges,
    create_workspace,
    diff_text,
    finalize_workspace,
    remove_workspace,
)

__all__ = [
    "SourceRepo",
    "Workspace",
    "WorkspaceChanges",
    "create_workspace",
    "diff_text",
    "finalize_workspace",
    "is_git_url",
    "remove_workspace",
    "resolve_source",
]
