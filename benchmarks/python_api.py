"""What the public Python API costs: (a) importing ``claude_conductor`` (and the CLI's module),
against a bare interpreter; (b) one task through ``run_agent_task`` inside an async flow (a
``conductor-task`` subflow with its four steps) against the same task run with no Prefect at
all (``steps.execute_task``, what ``conductor run --local`` does); (c) N such tasks at once with
``asyncio.gather``. Tasks are ``kind: command`` (``true``): no model, so what is left is
Conductor's and Prefect's own overhead (workspace, branch, artifacts, API calls).

    .venv/bin/python benchmarks/python_api.py [--runs 5] [--parallel 4] [--out FILE]

Starts its own ``prefect server start`` on a free port with a temporary home and stops it at
the end. Prints one JSON document (min / median / max of each series, the machine, the load
average before and after); ``--out`` also writes it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import free_port, load_average, machine, make_repo, stop_pids, summary, wait_http

_IMPORTS = {
    "python -c pass": "pass",
    "import claude_conductor": "import claude_conductor",
    "from claude_conductor import run_agent_task, agent_task": (
        "from claude_conductor import run_agent_task, agent_task"
    ),
    "import claude_conductor.cli.main": "import claude_conductor.cli.main",
    "import prefect (for scale)": "import prefect",
}


def _import_times(runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, code in _IMPORTS.items():
        times = []
        for _ in range(runs):
            began = time.monotonic()
            subprocess.run([sys.executable, "-c", code], check=True)
            times.append(time.monotonic() - began)
        out[label] = summary(times, 3)
    return out


async def _task_times(repo: Path, runs: int, parallel: int) -> dict[str, Any]:
    from prefect import flow

    from claude_conductor import TaskSpec, arun_agent_task
    from claude_conductor.flows.steps import execute_task
    from claude_conductor.settings import load_settings

    fields = {"kind": "command", "command": "true", "repo": str(repo), "title": "bench"}

    @flow
    async def one() -> float:
        began = time.monotonic()
        result = await arun_agent_task(**fields)
        assert result.ok, result.error
        return time.monotonic() - began

    @flow
    async def many(n: int) -> float:
        began = time.monotonic()
        results = await asyncio.gather(*(arun_agent_task(**fields) for _ in range(n)))
        assert all(r.ok for r in results), [r.error for r in results]
        return time.monotonic() - began

    local: list[float] = []
    for _ in range(runs):
        began = time.monotonic()
        result = await execute_task(TaskSpec(**fields), load_settings())  # type: ignore[arg-type]
        assert result.ok, result.error
        local.append(time.monotonic() - began)
    in_flow = [await one() for _ in range(runs)]
    gathered = [await many(parallel) for _ in range(max(1, runs // 2))]
    return {
        "execute_task (no Prefect), s": summary(local),
        "run_agent_task in an async flow (subflow, 4 steps), s": summary(in_flow),
        f"{parallel} x run_agent_task with asyncio.gather, wall s": summary(gathered),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    doc: dict[str, Any] = {
        "harness": "python_api",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_before": load_average(),
        "imports_s": _import_times(args.runs),
    }
    with tempfile.TemporaryDirectory(prefix="conductor-bench-api-") as tmp:
        root = Path(tmp)
        port = free_port()
        api = f"http://127.0.0.1:{port}/api"
        env = {**os.environ, "PREFECT_HOME": str(root / "prefect-home")}
        argv = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
        server = subprocess.Popen(
            [*argv, "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            if not wait_http(f"{api}/health", 180):
                raise SystemExit("the Prefect server did not become healthy in 180 s")
            os.environ.update({"PREFECT_API_URL": api, "CONDUCTOR_HOME": str(root / "home")})
            repo = make_repo(root)
            doc["tasks"] = asyncio.run(_task_times(repo, args.runs, args.parallel))
        finally:
            stop_pids([server.pid])
    doc["load_after"] = load_average()
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
