"""Time the standalone tier: ``up`` cold (fresh home) and warm (after ``down``), an idempotent
``up``, ``down``, and submit -> Running latency of ``conductor-task/run`` (a ``command`` task
on a tiny git repository) through the real process worker.

    .venv/bin/python benchmarks/standalone_stack.py [--runs 5] [--query-seconds 1] [--pyc]

``--pyc`` lets the stack's processes use (and write) compiled bytecode in a private cache
(``PYTHONPYCACHEPREFIX``), for machines whose environment sets ``PYTHONDONTWRITEBYTECODE`` on a
virtualenv installed without bytecode. Prints one JSON document; ``--out`` also writes it.

For the comparison with stock Prefect (latency, throughput, memory, start-up, min / median /
max) see ``standalone_compare.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import bench_env, free_port, make_repo

from claude_conductor.client.connection import conductor_client
from claude_conductor.settings import ConductorSettings, ServerSettings, WorkerSettings
from claude_conductor.tiers import standalone


async def _latencies(settings: ConductorSettings, repo: Path, runs: int) -> list[float]:
    out: list[float] = []
    async with conductor_client(settings) as client:
        deployment = await client.read_deployment_by_name("conductor-task/run")
        for _ in range(runs):
            spec = {"kind": "command", "command": "true", "repo": str(repo), "title": "bench"}
            began = time.monotonic()
            run = await client.create_flow_run_from_deployment(
                deployment.id, parameters={"spec": spec}
            )
            running_at = None
            while True:
                current = await client.read_flow_run(run.id)
                state = current.state
                if running_at is None and state and (state.is_running() or state.is_final()):
                    running_at = time.monotonic() - began
                if state and state.is_final():
                    break
                await asyncio.sleep(0.05)
            assert state.is_completed(), state
            out.append(round(running_at or 0.0, 2))
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--query-seconds", type=float, default=1.0)
    parser.add_argument("--pyc", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    env = bench_env(args.pyc)
    with tempfile.TemporaryDirectory(prefix="conductor-bench-") as tmp:
        root = Path(tmp)
        settings = ConductorSettings(
            home=root / "home",
            server=ServerSettings(port=free_port()),
            worker=WorkerSettings(query_seconds=args.query_seconds),
            dashboard={"enabled": False},
        )
        result: dict[str, Any] = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, "
            f"Python {sys.version.split()[0]}",
            "query_seconds": args.query_seconds,
            "bytecode": "private cache" if args.pyc else "as the environment says",
            "load_average_before": round(os.getloadavg()[0], 2),
        }
        try:
            began = time.monotonic()
            standalone.up(settings, base_env=env)
            result["up_cold_seconds"] = round(time.monotonic() - began, 2)
            began = time.monotonic()
            standalone.up(settings, base_env=env)
            result["up_again_seconds"] = round(time.monotonic() - began, 2)
            repo = make_repo(root)
            lat = asyncio.run(_latencies(settings, repo, args.runs))
            result["submit_to_running_seconds"] = lat
            result["submit_to_running_median"] = statistics.median(lat)
            began = time.monotonic()
            standalone.down(settings)
            result["down_seconds"] = round(time.monotonic() - began, 2)
            began = time.monotonic()
            standalone.up(settings, base_env=env)
            result["up_warm_seconds"] = round(time.monotonic() - began, 2)
        finally:
            standalone.down(settings)
            result["load_average_after"] = round(os.getloadavg()[0], 2)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
