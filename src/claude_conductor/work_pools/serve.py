"""Several Conductor workers in one process, one per pool, sharing one forkserver: the
standalone tier runs its agent pool and its coordinator pool this way (one worker's memory
instead of two). Each pool keeps its own slots: a fan-out parent on the coordinator pool never
holds an agent slot.

    python -m claude_conductor.work_pools.serve --pool conductor-agents --name agents-worker \\
        --pool conductor-coordinators --name coordinators-worker

SIGTERM or SIGINT stops the workers (their runs are stopped with them, as with
``prefect worker start``).

It may be started before its server is ready (``conductor up`` starts it beside the server, so
that its imports overlap the server's start): it first imports what the forkserver preloads and
forks the forkserver from itself (``forking.prefork``: the two share those pages), then waits
until the API answers and its pools exist, then starts the workers.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import httpx
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL

from claude_conductor.settings import load_settings
from claude_conductor.system.hardening import make_undumpable
from claude_conductor.work_pools import forking
from claude_conductor.work_pools.worker import ConductorWorker

logger = logging.getLogger(__name__)

_WAIT_STEP_SECONDS = (0.05, 0.1, 0.2, 0.5, 1.0)


async def wait_for_api(pools: list[str]) -> None:
    """Until the API answers and every pool in ``pools`` exists (no time limit: whoever
    started the worker bounds the wait; ``conductor up`` does)."""
    health = str(PREFECT_API_URL.value()).rstrip("/") + "/health"
    attempt = 0
    async with httpx.AsyncClient(timeout=2.0) as http:
        while True:
            try:
                if (await http.get(health)).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(_WAIT_STEP_SECONDS[min(attempt, len(_WAIT_STEP_SECONDS) - 1)])
            attempt += 1
    waiting = list(pools)
    async with get_client() as client:
        while waiting:
            try:
                await client.read_work_pool(waiting[0])
                waiting.pop(0)
                continue
            except ObjectNotFound:
                if attempt == 0:
                    logger.info("waiting for work pool %r to be created", waiting[0])
            await asyncio.sleep(_WAIT_STEP_SECONDS[min(attempt, len(_WAIT_STEP_SECONDS) - 1)])
            attempt += 1


__all__ = ["main", "serve"]


async def serve(pools: list[str], names: list[str]) -> None:
    await wait_for_api(pools)
    workers = [
        ConductorWorker(work_pool_name=pool, name=name, create_pool_if_not_found=False)
        for pool, name in zip(pools, names, strict=True)
    ]
    tasks = [
        asyncio.ensure_future(w.start(printer=lambda m: print(m, flush=True))) for w in workers
    ]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await asyncio.wait(
        [*tasks, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED
    )
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="conductor-worker")
    parser.add_argument("--pool", action="append", required=True, help="a work pool (repeat)")
    parser.add_argument("--name", action="append", required=True, help="its worker's name")
    args = parser.parse_args(argv)
    if len(args.pool) != len(args.name):
        parser.error("give one --name per --pool")
    make_undumpable()
    settings = load_settings()
    preload = (*forking.DEFAULT_PRELOAD, *settings.worker.preload)
    forking.prefork(preload, forking.run_records_dir(settings))  # before any thread or loop
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(
            "%(asctime)s.%(msecs)03d | %(levelname)-7s | %(name)s - %(message)s", "%H:%M:%S"
        )
    )
    ours = logging.getLogger("claude_conductor")
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    asyncio.run(serve(args.pool, args.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
