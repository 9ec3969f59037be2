"""A non-dumpable process keeps its environment from other processes of the same user."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import as_unprivileged_user

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")

_CHILD = textwrap.dedent(
    """
    import os, sys, time
    from claude_conductor.system.hardening import is_dumpable, make_undumpable
    if sys.argv[1] == "harden":
        assert make_undumpable() and not is_dumpable()
    print("ready", flush=True)
    time.sleep(30)
    """
)


def _as_user() -> list[str]:
    return list(as_unprivileged_user())


def _environ_readable_by_a_sibling(harden: bool) -> bool:
    """Start a process holding a secret, then try to read its environ as the same user."""
    env = {"PATH": "/usr/bin:/bin", "CONDUCTOR_TEST_SECRET": "s3cret-value"}
    holder = subprocess.Popen(
        [*_as_user(), sys.executable, "-c", _CHILD, "harden" if harden else "plain"],
        stdout=subprocess.PIPE,
        text=True,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        reader = subprocess.run(
            [*_as_user(), "cat", f"/proc/{holder.pid}/environ"], capture_output=True, timeout=10
        )
        return b"s3cret-value" in reader.stdout
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_undumpable_hides_the_environment_from_the_same_user() -> None:
    assert _environ_readable_by_a_sibling(False), "a plain process's environ is readable"
    assert not _environ_readable_by_a_sibling(True)


def test_make_undumpable_reports_the_new_state() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from claude_conductor.system.hardening import *;"
            "print(is_dumpable(), make_undumpable(), is_dumpable())",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert out.stdout.split() == ["True", "True", "False"]
