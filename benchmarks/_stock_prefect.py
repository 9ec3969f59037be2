"""A stock Prefect stack for comparison: ``prefect server start`` (SQLite) and one
``prefect worker start --type process`` with default settings (``PREFECT_WORKER_QUERY_SECONDS``
10), a trivial flow deployed from a local directory with ``Flow.from_source(...).deploy()``.

Everything lives in a home of its own (``PREFECT_HOME``) on a free loopback port; every process
carries a marker variable, so ``stop`` reaps the flow-run processes the worker started in
their own sessions too.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from uuid import UUID

from _common import free_port, memory, process_tree, stop_pids, wait_http

from claude_conductor.system.processes import find_processes_with_env as with_env

__all__ = ["MARKER", "POOL", "StockStack", "reap_all"]

MARKER = "CONDUCTOR_BENCH_STOCK"
POOL = "bench-stock"
WORKER = "bench-stock-worker"
FLOW_FILE = "stock_flow.py"
# Async, like Conductor's task flow (a sync flow adds up to 1 s per run: the heartbeat thread
# sleeps in 1 s steps). The body only records when it started.
FLOW_SOURCE = """\
import asyncio
import os
import time

from prefect import flow


@flow(name="bench-trivial")
async def trivial(mark: str, gate: str = "", sleep_seconds: float = 0) -> None:
    with open(mark, "a") as fh:
        fh.write(f"{time.time():.6f}\\n")
    deadline = time.time() + sleep_seconds
    while gate and not os.path.exists(gate) and time.time() < deadline:
        await asyncio.sleep(0.1)
"""


class StockStack:
    """Server + one process worker, started and stopped by this harness."""

    def __init__(
        self, root: Path, base_env: dict[str, str], query_seconds: float | None = None
    ) -> None:
        self.root = root
        self.home = root / "prefect-home"
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        env = {k: v for k, v in base_env.items() if not k.startswith("PREFECT_")}
        # Keep it on loopback and quiet: no analytics or telemetry (no outbound traffic).
        env.update(
            {
                "PREFECT_HOME": str(self.home),
                "PREFECT_API_URL": self.api_url,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "DO_NOT_TRACK": "1",
                MARKER: str(self.home),
            }
        )
        if query_seconds is not None:  # "tuned": Prefect's default is 10 s
            env["PREFECT_WORKER_QUERY_SECONDS"] = f"{query_seconds:g}"
        self.query_seconds = query_seconds if query_seconds is not None else 10.0
        self.env = env
        self.server: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self._logs: list[IO[bytes]] = []
        self.flow_dir = root / "stock-flow"
        self.flow_dir.mkdir(parents=True, exist_ok=True)
        (self.flow_dir / FLOW_FILE).write_text(FLOW_SOURCE)

    # -- processes -------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], cwd: Path) -> subprocess.Popen[bytes]:
        log = (self.root / f"stock-{name}.log").open("ab")
        self._logs.append(log)
        return subprocess.Popen(
            argv, env=self.env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def up(self, timeout_seconds: float = 120.0) -> dict[str, float]:
        """Start the server, wait until healthy, start the worker, wait for its first
        heartbeat; returns the seconds to each point (``total`` = ready)."""
        self.home.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        started_at = datetime.now(UTC)
        self.server = self._spawn(
            "server",
            [sys.executable, "-m", "prefect", "server", "start",
             "--host", "127.0.0.1", "--port", str(self.port)],
            self.root,
        )  # fmt: skip
        if not wait_http(self.api_url + "/health", timeout_seconds):
            raise RuntimeError(f"stock server not healthy; see {self.root}/stock-server.log")
        server_ready = time.monotonic() - began
        cwd = self.root / "worker-cwd"
        cwd.mkdir(exist_ok=True)
        self.worker = self._spawn(
            "worker",
            [sys.executable, "-m", "prefect", "worker", "start",
             "--pool", POOL, "--type", "process", "--name", WORKER],
            cwd,
        )  # fmt: skip
        asyncio.run(self._wait_heartbeat(started_at, timeout_seconds))
        total = time.monotonic() - began
        return {"server_ready": server_ready, "worker_ready": total - server_ready, "total": total}

    async def _wait_heartbeat(self, since: datetime, timeout_seconds: float) -> None:
        from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

        deadline = time.monotonic() + timeout_seconds
        async with self.client() as client:
            while time.monotonic() < deadline:
                try:
                    workers = await client.read_workers_for_work_pool(POOL)
                except (ObjectNotFound, PrefectHTTPStatusError):
                    workers = []  # the worker has not created its pool yet
                if any(
                    w.name == WORKER and w.last_heartbeat_time and w.last_heartbeat_time >= since
                    for w in workers
                ):
                    return
                if self.worker is not None and self.worker.poll() is not None:
                    raise RuntimeError(f"stock worker exited; see {self.root}/stock-worker.log")
                await asyncio.sleep(0.1)
        raise RuntimeError("stock worker sent no heartbeat in time")

    def pids(self) -> dict[str, int]:
        procs = {"prefect-server": self.server, "worker": self.worker}
        return {name: p.pid for name, p in procs.items() if p is not None and p.poll() is None}

    def memory(self) -> dict[str, Any]:
        return memory(self.pids())

    def flow_run_processes(self) -> list[int]:
        """The worker's descendants: the processes of the flow runs it started."""
        if self.worker is None:
            return []
        return [p for p in process_tree([self.worker.pid]) if p != self.worker.pid]

    def stop(self) -> float:
        """Worker first, then the server, then anything left with the marker; seconds taken."""
        began = time.monotonic()
        for proc in (self.worker, self.server):
            if proc is not None:
                stop_pids([proc.pid])
                proc.wait(timeout=10)
        strays = with_env(MARKER, str(self.home))
        if strays:
            stop_pids(strays, grace_seconds=5)
        self.worker = self.server = None
        for log in self._logs:
            log.close()
        self._logs.clear()
        return time.monotonic() - began

    # -- the API -----------------------------------------------------------------------------

    def client(self) -> Any:
        from prefect.client.orchestration import PrefectClient

        return PrefectClient(self.api_url)

    async def deploy(self, concurrency_limit: int) -> UUID:
        """Deploy the trivial flow the way a user would, and set the pool's limit."""
        from prefect import Flow
        from prefect.client.schemas.actions import WorkPoolUpdate
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with (
            temporary_settings(updates={PREFECT_API_URL: self.api_url}),
            contextlib.redirect_stdout(io.StringIO()),  # its table of deployments
        ):
            flow = await Flow.afrom_source(str(self.flow_dir), entrypoint=f"{FLOW_FILE}:trivial")
            deployment_id: UUID = await flow.adeploy(
                name="bench", work_pool_name=POOL, print_next_steps=False, ignore_warnings=True
            )
        async with self.client() as client:
            await client.update_work_pool(POOL, WorkPoolUpdate(concurrency_limit=concurrency_limit))
        return deployment_id


def reap_all(root: Path) -> None:
    """Last resort (an aborted run): stop anything still carrying the marker of ``root``."""
    strays = with_env(MARKER, str(root / "prefect-home"))
    if strays:
        stop_pids(strays, grace_seconds=5)
