"""Prefect's flow-run suspension observer, for runs forked from the forkserver, without its
two waits.

Prefect 3.8's flow engine watches every deployment run for a suspension requested from
outside (``suspend_flow_run(flow_run_id=...)``, the UI): a thread with its own event loop
subscribes to the run's ``Suspended`` events, reads the run's current state, and marks the
run's suspension request; the engine raises at its next task. Prefect's version makes the run
wait for that subscription before the flow starts (about 45 ms on a small machine, on the path
of every start) and, at the end, for the thread's 0.2 s polling loop to notice it should stop
(about 0.1 s a run, holding the worker's slot).

``observe_flow_run_suspension`` here keeps the watch (the same ``FlowRunSuspendingObserver``:
events, the read of the current state, the polling fallback) and drops the waits: the flow
starts while the subscription is made (a suspension requested before it is ready is still
seen, by that read of the current state, and honoured at the next task, as one requested a
moment later would be), and stopping cancels the thread's task at once. ``install`` puts it
in Prefect's flow engine (the forkserver does, before any fork); a Prefect whose hook differs
keeps its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from uuid import UUID

if TYPE_CHECKING:
    from prefect.client.schemas.objects import State

__all__ = ["install", "observe_flow_run_suspension"]

logger = logging.getLogger(__name__)

_JOIN_SECONDS = 2.0
_HOOK = "observe_flow_run_suspension"
_PARAMETERS = ("flow_run_id", "suspension_request", "polling_interval")


@contextlib.contextmanager
def observe_flow_run_suspension(
    flow_run_id: UUID, suspension_request: Any, polling_interval: float = 10
) -> Iterator[None]:
    """Watch ``flow_run_id`` for a suspension from outside while the block runs (Prefect's
    hook of the same name and signature, without its start-up and shutdown waits)."""
    from prefect._flow_run_suspension import mark_flow_run_suspension_requested
    from prefect._internal.observers import FlowRunSuspendingObserver

    lock = threading.Lock()
    stopping = False
    running: tuple[asyncio.AbstractEventLoop, asyncio.Task[None]] | None = None

    def mark_suspended(flow_run_id: UUID, state: State[Any]) -> None:
        if not mark_flow_run_suspension_requested(flow_run_id, state):
            suspension_request.mark_requested(state)

    async def watch() -> None:
        nonlocal running
        task = asyncio.current_task()
        assert task is not None
        with lock:
            if stopping:
                return
            running = (asyncio.get_running_loop(), task)
        async with FlowRunSuspendingObserver(
            on_suspended=mark_suspended, polling_interval=polling_interval
        ) as observer:
            await observer.watch_flow_run_id(flow_run_id)
            await asyncio.Event().wait()  # until cancelled

    def thread_main() -> None:
        try:
            asyncio.run(watch())
        except asyncio.CancelledError:
            pass
        except Exception:
            logger.debug("the suspension observer of %s ended", flow_run_id, exc_info=True)

    context = contextvars.copy_context()  # the run's settings and logging context
    thread = threading.Thread(
        target=context.run, args=(thread_main,), name="suspension-observer", daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        with lock:
            stopping = True
            if running is not None:
                loop, task = running
                with contextlib.suppress(RuntimeError):  # its loop has already closed
                    loop.call_soon_threadsafe(task.cancel)
        thread.join(timeout=_JOIN_SECONDS)


def install() -> bool:
    """Use ``observe_flow_run_suspension`` in Prefect's flow engine (this process and the
    processes it forks). False, and Prefect's own kept, when its hook is not the one this
    replaces (another Prefect version)."""
    try:
        from prefect import flow_engine
    except ImportError:  # pragma: no cover - a dependency
        return False
    current = getattr(flow_engine, _HOOK, None)
    if current is observe_flow_run_suspension:
        return True
    if current is None:
        return False
    try:
        parameters = tuple(inspect.signature(current).parameters)
    except (TypeError, ValueError):
        return False
    if parameters != _PARAMETERS:
        return False
    setattr(flow_engine, _HOOK, observe_flow_run_suspension)
    return True
