"""Run a user's shell command (a ``verify`` step or a ``kind: command`` task).

The user writes a shell command line on purpose, so it runs as ``/bin/sh -c COMMAND``; in
its own process group, with combined stdout/stderr captured as a bounded tail, and the whole
group killed on timeout or cancellation. The command runs the repository's code, so it is
untrusted: where it runs is the task's placement (on the process placement, with
``agent.sandbox`` on, in bubblewrap: ``agents/bubblewrap.py``), and its descendants carry the
run's mark, so they are stopped too, sandboxed or not.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

from claude_conductor.agents.argv import Redactor
from claude_conductor.agents.placement import LaunchRequest, Placement
from claude_conductor.agents.process import new_mark, spawn, stop_group, wait_exit
from claude_conductor.models import VerifyResult

__all__ = ["run_shell", "tail_text"]

logger = logging.getLogger(__name__)

TAIL_LINES = 50
TAIL_BYTES = 8 * 1024
_CHUNK_BYTES = 64 * 1024
_DRAIN_SECONDS = 1.0


def tail_text(data: bytes, *, max_lines: int = TAIL_LINES, max_bytes: int = TAIL_BYTES) -> str:
    """The last ``max_lines`` lines of ``data``, at most ``max_bytes``, decoded leniently."""
    data = data[-max_bytes:]
    text = data.decode("utf-8", errors="replace")
    lines = text.splitlines()
    return "\n".join(lines[-max_lines:])


class _Tail:
    """Keeps the last bytes of a stream without growing."""

    def __init__(self, limit: int) -> None:
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._limit = limit

    def add(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk)
        while self._size - len(self._chunks[0]) >= self._limit:
            self._size -= len(self._chunks.popleft())

    def value(self) -> bytes:
        return b"".join(self._chunks)[-self._limit :]


async def _pump(stream: asyncio.StreamReader | None, tail: _Tail) -> None:
    if stream is None:
        return
    while chunk := await stream.read(_CHUNK_BYTES):
        tail.add(chunk)


async def run_shell(
    command: str,
    cwd: Path | str,
    timeout_seconds: float,
    env: Mapping[str, str] | None = None,
    *,
    kill_grace_seconds: float = 3.0,
    placement: Placement | None = None,
    task_id: str = "",
) -> VerifyResult:
    """Run ``command`` with ``/bin/sh -c`` in ``cwd``; never raises for the command failing.

    ``placement`` decides where it runs (default: a plain child process here, unconfined);
    ``env`` is used as given, so callers pass a scrubbed one (``agents.argv.build_shell_env``)
    for untrusted work. Raises ``AgentError`` when the placement cannot run it (the sandbox's
    tools missing, say).

    Returns its exit code (None when it was stopped), a redacted tail of its combined output,
    its duration, and whether the timeout stopped it. On cancellation the process group is
    killed and the cancellation re-raised.
    """
    run_env = dict(env) if env is not None else dict(os.environ)
    redact = Redactor(run_env)
    started = time.monotonic()
    mark = new_mark()
    argv = ["/bin/sh", "-c", command]
    plan = None
    if placement is not None:
        plan = placement.plan(
            LaunchRequest(
                task_id=task_id,
                role="shell",
                argv=argv,
                env=run_env,
                workspace=Path(cwd),
                timeout_seconds=timeout_seconds,
            )
        )
        argv, run_env, cwd = plan.argv, plan.env, plan.cwd
    try:
        process = await spawn(
            argv,
            cwd=cwd,
            env=run_env,
            mark=mark,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except BaseException:
        if plan is not None:
            await plan.run_cleanup()
        raise
    tail = _Tail(TAIL_BYTES * 4)
    pump = asyncio.create_task(_pump(process.stdout, tail))
    timed_out = False
    try:
        if await wait_exit(process, timeout_seconds) is None:
            timed_out = True
            logger.info(
                "command timed out after %.1fs: stopping its process group", timeout_seconds
            )
    finally:
        # Stops the command on timeout or cancellation, and reaps any background children it
        # left holding the output pipe when it exited normally.
        try:
            await stop_group(process, grace_seconds=kill_grace_seconds, mark=mark)
            await asyncio.wait({pump}, timeout=_DRAIN_SECONDS)
        finally:
            if not pump.done():
                pump.cancel()  # a process outside the group still holds the pipe
            if plan is not None:
                await asyncio.shield(plan.run_cleanup())
    output = tail_text(tail.value())
    if timed_out:
        output += f"\n[conductor] stopped after the {timeout_seconds:g}s timeout"
    return VerifyResult(
        command=command,
        exit_code=None if timed_out else process.returncode,
        output_tail=redact(output),
        duration_seconds=round(time.monotonic() - started, 3),
        timed_out=timed_out,
    )
