"""A forked run's logs reach the API before the run reports its final state, and whatever it
logs after that before its process exits.

Prefect batches a run's logs (``APILogWorker``: one request every
``PREFECT_LOGGING_TO_API_BATCH_INTERVAL``, 2 s by default) and sends the last batch when its
process exits, after the final state: a run that logs and ends at once is seen Completed by
its user while none of its lines can be read yet (``conductor logs`` right after ``--wait``).
In a run forked by the forkserver (``forkserver._run_engine``) each final state the engine
proposes for a flow run is preceded by sending every queued line (``send_logs_before_final_
states``), bounded so that an API that does not answer delays the state, never blocks it.

The engine ends with ``os._exit`` (no at-exit hook runs): ``drain_at_exit`` sends what was
logged after the final state, and events, then waits for what a bounded send left in flight.

Imported by the engine only (it imports Prefect): never by the forkserver before it forks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["drain_at_exit", "send_logs_before_final_states", "send_queued_logs"]

_PROPOSERS = ("propose_state", "propose_state_sync")
"""How Prefect's flow engine (``prefect.flow_engine``) proposes each state of a flow run."""
_IN_FLIGHT: set[concurrent.futures.Future[bool]] = set()
"""Sends a bounded wait gave up on: still going, and waited for again at exit."""


def send_queued_logs(timeout_seconds: float) -> bool:
    """Send every log line queued in this process and wait until the API has them, at most
    ``timeout_seconds``. True when all were sent; what is still in flight then is waited for
    again by ``drain_at_exit``. Blocking, and run in a thread of its own (Prefect's drain
    answers a thread with an event loop differently)."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="conductor-logs") as pool:
        return pool.submit(_send_queued_logs, timeout_seconds).result()


def _send_queued_logs(timeout_seconds: float) -> bool:
    from prefect.logging.handlers import APILogWorker

    result = APILogWorker.drain_all(timeout=timeout_seconds)
    assert isinstance(result, tuple), "no event loop runs in this thread"
    _done, not_done = result
    _IN_FLIGHT.update(not_done)
    return not not_done


def _is_final(state: Any) -> bool:
    is_final = getattr(state, "is_final", None)
    return bool(callable(is_final) and is_final())


def _report_late(timeout_seconds: float) -> None:
    print(
        f"conductor forkserver: the run's logs were not all sent after {timeout_seconds:.0f}s; "
        "its final state is reported now and the rest is sent before the process exits",
        file=sys.stderr,
    )


@contextlib.contextmanager
def send_logs_before_final_states(timeout_seconds: float) -> Iterator[None]:
    """While this is entered, each final state Prefect's flow engine proposes (Completed,
    Failed, Crashed, Cancelled) waits until the logs queued so far are in the API, at most
    ``timeout_seconds``. The engine looks its ``propose_state`` functions up by module name;
    they are swapped for waiting ones here and put back on exit."""
    import prefect.flow_engine as flow_engine
    from prefect._internal.concurrency.threads import in_global_loop

    originals = {name: getattr(flow_engine, name, None) for name in _PROPOSERS}
    propose_state, propose_state_sync = originals.values()
    if not (callable(propose_state) and callable(propose_state_sync)):
        # Another Prefect: its logs go after the final state, as with Prefect's own engine.
        yield
        return

    async def propose_after_logs(client: Any, state: Any, *args: Any, **kwargs: Any) -> Any:
        sent = not _is_final(state) or await asyncio.to_thread(_send_queued_logs, timeout_seconds)
        if not sent:
            _report_late(timeout_seconds)
        return await propose_state(client, state, *args, **kwargs)

    def propose_after_logs_sync(client: Any, state: Any, *args: Any, **kwargs: Any) -> Any:
        # Never on Prefect's global loop, which sends the logs: blocking it would deadlock.
        wait = _is_final(state) and not in_global_loop()
        if wait and not send_queued_logs(timeout_seconds):
            _report_late(timeout_seconds)
        return propose_state_sync(client, state, *args, **kwargs)

    setattr(flow_engine, "propose_state", propose_after_logs)  # noqa: B010
    setattr(flow_engine, "propose_state_sync", propose_after_logs_sync)  # noqa: B010
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(flow_engine, name, original)


def drain_at_exit(timeout_seconds: float) -> None:
    """Send what is still queued (logs, then events) and wait for sends still in flight, at
    most ``timeout_seconds`` for each kind (a run must not hold its slot forever when the API
    is gone); what is still unsent then is reported on stderr, which the worker logs."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (APILogWorker, EventsWorker):
        began = time.monotonic()
        try:
            result = service.drain_all(timeout=timeout_seconds)
        except Exception as exc:  # the run's state is final already; only report it
            print(
                f"conductor forkserver: draining {service.__name__} failed: {exc}", file=sys.stderr
            )
            continue
        pending = set(getattr(result, "not_done", ()) or ())
        if service is APILogWorker and _IN_FLIGHT:
            left = max(0.0, timeout_seconds - (time.monotonic() - began))
            pending |= concurrent.futures.wait(_IN_FLIGHT, timeout=left).not_done
        if pending:
            print(
                f"conductor forkserver: {service.__name__} had not sent everything after "
                f"{time.monotonic() - began:.0f}s ({len(pending)} batches lost)",
                file=sys.stderr,
            )
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
