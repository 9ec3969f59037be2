"""What a git URL is: the one answer the CLI, task files and workspaces share.

A repository given as ``https://``/``ssh://``/``git://``/``file://`` (any ``scheme://``) or
scp-style ``[user@]host:path`` (``deploy@git.example.com:team/app.git``, the form most people
copy) is a URL; anything else is a local path. Imports nothing of ours.
"""

from __future__ import annotations

import re

__all__ = ["is_git_url"]

_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# [user@]host:path with no slash before the colon (git's own rule). Without a user the host
# must have a dot or be bracketed IPv6, so `C:/x` and `notes:v2` stay local paths.
_SCP_RE = re.compile(
    r"^(?:[A-Za-z0-9._~+-]+@(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])"
    r"|(?:[A-Za-z0-9-]+\.[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])):(?!//)"
)


def is_git_url(repo: str) -> bool:
    """Whether ``repo`` names a remote repository (``scheme://...`` or ``[user@]host:path``),
    not a local path."""
    text = repo.strip()
    return bool(_SCHEME_RE.match(text) or _SCP_RE.match(text))
