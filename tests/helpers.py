"""Helpers several test modules share: git with a fixed identity, the live ``claude``
processes of a task, and driving the dashboard in a real chromium (playwright)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@localhost",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@localhost",
}


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` (author and committer set), return its stdout; raise on failure."""
    return subprocess.run(
        ["git", *args],
        cwd=repo,
        env={**os.environ, **GIT_ENV},
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout


def make_repo(path: Path) -> Path:
    """A git repository at ``path`` with one commit (``main.py``) on ``main``."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "main.py").write_text("print('hi')\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "init")
    return path


def claude_pids_for(task_id: str) -> list[int]:
    """Live `claude` processes working in this task's workspace."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"claude") and cwd.endswith(f"/workspaces/{task_id}"):
            pids.append(int(entry.name))
    return pids


# --------------------------------------------------------------------------- the browser

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""Debian's chromium under playwright, headless, offline (see ../shared/FACTS.md)."""

WAIT_MS = 30_000
OUTPUT = Path(__file__).resolve().parents[1] / "test-output"
"""Screenshots land in ``test-output/<test name>/`` at the repository root (gitignored)."""


def chromium() -> str:
    """The chromium binary; skips the test when there is none."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip(
            "chromium is not installed: `apt-get install -y chromium` (Debian), "
            "then run the browser tests again"
        )
    return path


def shot(page: Any, name: str) -> Path:
    """Screenshot the whole page into ``page.shots``. Streamlit scrolls inside its main area,
    so the viewport is made as tall as that content for the shot."""
    path: Path = page.shots / f"{name}.png"
    size = page.viewport_size
    height = page.evaluate(
        "() => { const m = document.querySelector('[data-testid=\"stMain\"]');"
        " return m ? m.scrollHeight : document.body.scrollHeight; }"
    )
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], int(height))})
    try:
        page.screenshot(path=str(path), full_page=True)
    finally:
        page.set_viewport_size(size)
    return path


def settled(page: Any, timeout_ms: int = WAIT_MS) -> None:
    """Wait until Streamlit has finished running the script."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_ms
    )


def sign_in(page: Any, url: str, password: str) -> None:
    """Open ``url`` (any page of the dashboard) and sign in. Signing in lasts for the browser
    tab's Streamlit session: move around with the dashboard's own links afterwards."""
    page.goto(url)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()


def network_change_retried(
    on_failure: Callable[[Any], None] | None = None, attempts: int = 3
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Run a browser test (it takes a ``page`` fixture with ``console_lines``) again, at most
    ``attempts`` times in all, when, and only when, Chromium aborted requests with
    ERR_NETWORK_CHANGED: it does that whenever a network interface appears or goes on the
    machine (Docker bridges of other tests), even for loopback traffic. Every test starts from
    a fresh page load and submits its own tasks, so running it again is sound.
    ``on_failure(page)`` runs before the final failure is raised."""

    def decorate(test: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(test)
        def run(*args: Any, **kwargs: Any) -> None:
            page = kwargs["page"]
            for attempt in range(1, attempts + 1):
                page.console_lines.clear()
                try:
                    test(*args, **kwargs)
                    return
                except Exception:
                    changed = any("ERR_NETWORK_CHANGED" in line for line in page.console_lines)
                    if attempt == attempts or not changed:
                        if on_failure is not None:
                            on_failure(page)
                        raise
                    warnings.warn(
                        f"{test.__name__}: Chromium reported ERR_NETWORK_CHANGED (interfaces "
                        f"changed on this machine); running the test again "
                        f"({attempt + 1}/{attempts})",
                        stacklevel=1,
                    )

        return run

    return decorate


NOBODY = 65534


@functools.cache
def as_unprivileged_user() -> tuple[str, ...]:
    """The prefix that runs a command as one unprivileged user (``nobody``) when the tests run
    as root (root reads every /proc entry); empty otherwise. Skips when that user cannot be had
    or cannot run this checkout's Python (a checkout in a private folder, e.g. ``mktemp -d``)."""
    import sys

    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv (util-linux) to drop to another user")
    prefix = (setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")
    src = Path(__file__).resolve().parents[1] / "src"
    probe = subprocess.run(
        [*prefix, sys.executable, "-c", "import claude_conductor.system.hardening"],
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(src)},
        timeout=60,
    )
    if probe.returncode != 0:
        pytest.skip(
            f"user {NOBODY} cannot run {sys.executable} with this checkout (a folder only root "
            "can read, e.g. one from mktemp -d?): clone it where other users can read it"
        )
    return prefix
