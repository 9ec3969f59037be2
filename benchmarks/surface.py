"""Time the Prefect-native surface on a real standalone stack (dashboard off):

- schedules: ``add_schedule`` -> the first run exists (Prefect's recent-deployments scheduler
  loop picks the new deployment up), and how late a due run starts (``start_time`` minus its
  scheduled time: the worker's poll plus the flow-run process start);
- the MCP server: spawn ``conductor mcp`` + initialize (the SDK's stdio client), then one
  ``list_tasks`` round trip.

    .venv/bin/python benchmarks/surface.py [--runs 5] [--out FILE]

Tasks are ``kind: command`` (no model). Prints one JSON document; ``--out`` also writes it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import bench_env, free_port, machine, make_repo, summary
from mcp import ClientSession, StdioServerParameters, stdio_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

from claude_conductor.client.connection import conductor_client
from claude_conductor.client.schedules import Timing, add_schedule, remove_schedule
from claude_conductor.models import TaskSpec
from claude_conductor.settings import ConductorSettings, ServerSettings, WorkerSettings
from claude_conductor.tiers import standalone

INTERVAL_SECONDS = 20


async def _schedule_once(settings: ConductorSettings, repo: Path, n: int) -> dict[str, float]:
    spec = TaskSpec.model_validate(
        {"kind": "command", "command": "true", "repo": str(repo), "title": f"bench {n}"}
    )
    name = f"bench-{n}"
    async with conductor_client(settings) as client:
        began = time.monotonic()
        info = await add_schedule(
            client, settings, spec, Timing(interval_seconds=INTERVAL_SECONDS), name
        )
        by_deployment = FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=[info.deployment_id])
        )
        created = None
        while True:
            runs = await client.read_flow_runs(flow_run_filter=by_deployment, limit=200)
            if runs and created is None:
                created = time.monotonic() - began
            started = [r for r in runs if r.start_time is not None and r.expected_start_time]
            if started:
                run = min(started, key=lambda r: r.start_time)  # type: ignore[arg-type,return-value]
                late = (run.start_time - run.expected_start_time).total_seconds()  # type: ignore[operator]
                break
            if time.monotonic() - began > 180:
                raise RuntimeError(f"schedule {name} did not start a run within 180 s")
            await asyncio.sleep(0.2)
        await remove_schedule(client, name)
    assert created is not None
    return {"created_seconds": created, "late_seconds": late}


async def _mcp_once(settings: ConductorSettings, env: dict[str, str]) -> dict[str, float]:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "claude_conductor.cli.main", "mcp"], env=env
    )
    began = time.monotonic()
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        ready = time.monotonic() - began
        t0 = time.monotonic()
        result = await session.call_tool("list_tasks", {"limit": 20})
        call = time.monotonic() - t0
        assert not result.is_error, result
    return {"initialize_seconds": ready, "list_tasks_seconds": call}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="conductor-bench-") as tmp:
        root = Path(tmp)
        repo = make_repo(root)
        settings = ConductorSettings(
            home=root / "home",
            server=ServerSettings(host="127.0.0.1", port=free_port()),
            worker=WorkerSettings(agents=2),
            dashboard={"enabled": False},
        )
        env = {
            k: v
            for k, v in bench_env(pyc=False).items()
            if not k.startswith(("CONDUCTOR_", "PREFECT_"))
        }
        env.update(
            {
                "CONDUCTOR_HOME": str(settings.home),
                "CONDUCTOR_SERVER__PORT": str(settings.server.port),
            }
        )
        standalone.up(settings, base_env=env, timeout_seconds=300)
        try:
            sched = [asyncio.run(_schedule_once(settings, repo, n)) for n in range(args.runs)]
            mcp = [asyncio.run(_mcp_once(settings, env)) for _ in range(args.runs)]
        finally:
            standalone.down(settings, grace_seconds=5)
    doc: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "interval_seconds": INTERVAL_SECONDS,
        "schedule_first_run_created_seconds": summary([s["created_seconds"] for s in sched]),
        "schedule_run_start_late_seconds": summary([s["late_seconds"] for s in sched]),
        "mcp_spawn_initialize_seconds": summary([m["initialize_seconds"] for m in mcp]),
        "mcp_list_tasks_seconds": summary([m["list_tasks_seconds"] for m in mcp], digits=3),
    }
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
