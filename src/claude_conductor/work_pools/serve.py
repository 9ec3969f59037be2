"""Several Conductor workers in one process, one per pool, sharing one forkserver: the
standalone tier runs its agent pool and its coordinator pool this way (one worker's memory
instead of two). Each pool keeps its own slots: a fan-out parent on the coordinator pool never
holds an agent slot.

    python -m claude_conductor.work_pools.serve --pool conductor-agents --name agents-worker \\
        --pool conductor-coordinators --name coordinators-worker

SIGTERM or SIGINT stops the workers (their runs are stopped with them, as with
``prefect worker start``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from claude_conductor.system.hardening import make_undumpable
from claude_conductor.work_pools.worker import ConductorWorker

__all__ = ["main", "serve"]


async def serve(pools: list[str], names: list[str]) -> None:
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
