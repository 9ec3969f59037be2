"""The standalone tier against a stock Prefect process worker, in one run, so the ratio shows.

    .venv/bin/python benchmarks/standalone_compare.py            # full run, ~30 min on 2 cores
    .venv/bin/python benchmarks/standalone_compare.py --runs 1 --tasks 5 --rounds 1 \\
        --idle-seconds 3 --out-dir /tmp/bench                   # a quick smoke test

Measures, each as min / median / max:

(a) submit -> work starts: a ``kind: command`` task whose command appends ``date +%s.%N`` to a
    file outside the repository (Conductor), a trivial async flow that appends ``time.time()``
    (stock). ``--runs`` runs, one at a time, each after a random pause of up to one poll interval.
(b) ``--tasks`` runs submitted back to back with ``--agents`` slots (Conductor: agent slots;
    stock: the pool's concurrency limit): wall time to the last final state, tasks/s;
    ``--rounds`` rounds.
(c) idle memory (VmRSS and PSS summed over every process tree started: server, workers,
    dashboard) ``--idle-seconds`` after ready, dashboard off and on.
(d) time to ready: ``standalone.up`` on a fresh home (cold: database created and migrated) and
    again after ``down`` (warm); stock: ``prefect server start`` until ``/api/health`` answers,
    then ``prefect worker start`` until its first heartbeat.

Conductor runs with the tier's defaults (the conductor worker: forked runs, woken by events,
fallback poll every 10 s); stock with Prefect's (every 10 s). Also recorded: each submission's
own time during (b) (p50 / max) and the "database is locked" errors in each server's log.
Phases run one after the other (never both stacks at once). With ``--pyc`` (the default) every
process uses a private bytecode cache filled beforehand by ``python -m compileall``.
Writes ``<out-dir>/standalone-<date>.json`` and ``.md``; everything started is stopped again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shlex
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import _report
from _common import (
    RESULTS,
    bench_env,
    compile_bytecode,
    free_port,
    load_average,
    machine,
    make_repo,
    memory,
    summary,
)
from _runs import PHASES, burst, latency
from _stock_prefect import StockStack, reap_all
from prefect.client.orchestration import PrefectClient

from claude_conductor.client.connection import conductor_client
from claude_conductor.client.tasks import submit_task
from claude_conductor.models import TaskSpec
from claude_conductor.settings import (
    ConductorSettings,
    DashboardSettings,
    ServerSettings,
    WorkerSettings,
)
from claude_conductor.tiers import standalone

STOCK_QUERY_SECONDS = 10.0  # Prefect's default PREFECT_WORKER_QUERY_SECONDS


def _settings(home: Path, agents: int, query_seconds: float | None) -> ConductorSettings:
    worker: dict[str, Any] = {"agents": agents}
    if query_seconds is not None:
        worker["query_seconds"] = query_seconds
    return ConductorSettings(
        home=home,
        server=ServerSettings(port=free_port()),
        worker=WorkerSettings(**worker),
        dashboard=DashboardSettings(enabled=False, port=free_port()),
    )


def _timed(fn: Any, *args: Any, **kwargs: Any) -> float:
    began = time.monotonic()
    fn(*args, **kwargs)
    return time.monotonic() - began


def _conductor_memory(settings: ConductorSettings) -> dict[str, Any]:
    return memory(standalone.status(settings).pids)


class Bench:
    def __init__(self, args: argparse.Namespace, root: Path, env: dict[str, str]) -> None:
        self.args = args
        self.root = root
        self.env = env
        self.rng = random.Random(args.seed)
        self.homes: list[ConductorSettings] = []
        self.stacks: list[StockStack] = []
        self.raw: dict[str, dict[str, Any]] = {"conductor": {}, "stock": {}}

    def _add(self, side: str, key: str, value: Any) -> None:
        self.raw[side].setdefault(key, []).append(value)

    def conductor(self, name: str) -> ConductorSettings:
        settings = _settings(self.root / name, self.args.agents, self.args.query_seconds)
        self.homes.append(settings)
        return settings

    def stock(self, name: str) -> StockStack:
        stack = StockStack(self.root / name, self.env)
        self.stacks.append(stack)
        return stack

    def idle(self) -> None:
        time.sleep(self.args.idle_seconds)

    # -- (c) and (d) ---------------------------------------------------------------------------

    def startup_round(self, index: int) -> None:
        env = self.env
        settings = self.conductor(f"conductor-{index}")
        self._add("conductor", "up_cold", _timed(standalone.up, settings, base_env=env))
        self._add("conductor", "down", _timed(standalone.down, settings))
        self._add("conductor", "up_warm", _timed(standalone.up, settings, base_env=env))
        self.idle()
        self._add("conductor", "idle_memory", _conductor_memory(settings))
        self._add("conductor", "down", _timed(standalone.down, settings))
        if not self.args.no_dashboard:
            up = _timed(standalone.up, settings, dashboard=True, base_env=env)
            self._add("conductor", "up_warm_dashboard", up)
            self.idle()
            self._add("conductor", "idle_memory_dashboard", _conductor_memory(settings))
            self._add("conductor", "down", _timed(standalone.down, settings))

        stack = self.stock(f"stock-{index}")
        self._add("stock", "up_cold_detail", stack.up())
        self._add("stock", "up_cold", self.raw["stock"]["up_cold_detail"][-1]["total"])
        self._add("stock", "down", stack.stop())
        self._add("stock", "up_warm_detail", stack.up())
        self._add("stock", "up_warm", self.raw["stock"]["up_warm_detail"][-1]["total"])
        self.idle()
        self._add("stock", "idle_memory", stack.memory())
        self._add("stock", "down", stack.stop())

    # -- (a) and (b) ---------------------------------------------------------------------------

    async def _measure(
        self, side: str, client: PrefectClient, submit: Any, jitter_seconds: float
    ) -> None:
        marks = self.root / f"marks-{side}"
        marks.mkdir()
        self.raw[side]["load_average_before_runs"] = load_average()
        self.raw[side]["latency"] = await latency(
            client, submit, marks, self.args.runs, jitter_seconds=jitter_seconds, rng=self.rng
        )
        for index in range(self.args.rounds):
            folder = marks / f"round-{index}"
            folder.mkdir()
            self._add(side, "burst", await burst(client, submit, folder, self.args.tasks))

    def conductor_runs(self) -> None:
        settings = self.conductor("conductor-runs")
        repo = make_repo(self.root)
        # The command writes when it started to a file outside its worktree, which the
        # commands' sandbox refuses: it is off here (it costs about 9 ms a command, see
        # shell_sandbox.py), as stock Prefect has none.
        standalone.up(settings, base_env={**self.env, "CONDUCTOR_AGENT__SANDBOX": "false"})

        async def submit(client: PrefectClient, index: int, mark: Path) -> UUID:
            spec = TaskSpec(
                kind="command",
                command=f"date +%s.%N >> {shlex.quote(str(mark))}",
                repo=str(repo),
                title=f"bench {mark.stem}",
            )
            return (await submit_task(client, spec)).id

        async def go() -> None:
            async with conductor_client(settings) as client:
                await self._measure("conductor", client, submit, settings.worker.query_seconds)

        try:
            asyncio.run(go())
        finally:
            standalone.down(settings)
            self.raw["conductor"]["database_locked"] = _locked(
                settings.logs_dir / "prefect-server.log"
            )

    def stock_runs(self) -> None:
        stack = self.stock("stock-runs")
        stack.up()

        async def go() -> None:
            deployment_id = await stack.deploy(concurrency_limit=self.args.agents)

            async def submit(client: PrefectClient, index: int, mark: Path) -> UUID:
                run = await client.create_flow_run_from_deployment(
                    deployment_id, parameters={"mark": str(mark)}
                )
                return run.id

            async with stack.client() as client:
                await self._measure("stock", client, submit, STOCK_QUERY_SECONDS)

        try:
            asyncio.run(go())
        finally:
            stack.stop()
            self.raw["stock"]["database_locked"] = _locked(stack.root / "stock-server.log")

    def cleanup(self) -> None:
        for settings in self.homes:
            try:
                standalone.down(settings)
            except Exception as exc:
                print(f"warning: down of {settings.home} failed: {exc}", file=sys.stderr)
        for stack in self.stacks:
            stack.stop()
        for folder in self.root.glob("stock-*"):
            reap_all(folder)


def _locked(log: Path) -> int:
    """SQLite "database is locked" errors the server logged."""
    try:
        return log.read_text(encoding="utf-8", errors="replace").count("database is locked")
    except OSError:
        return -1


def _figures(raw: dict[str, Any]) -> dict[str, Any]:
    """min / median / max of every measure of one side."""
    out: dict[str, Any] = {}
    for key in ("up_cold", "up_warm", "up_warm_dashboard", "down"):
        if raw.get(key):
            out[key + "_seconds"] = summary(raw[key])
    for key in ("idle_memory", "idle_memory_dashboard"):
        if raw.get(key):
            out[key + "_rss_mib"] = summary([m["rss_mib"] for m in raw[key]], 1)
            out[key + "_pss_mib"] = summary([m["pss_mib"] for m in raw[key]], 1)
    for key in ("up_cold_detail", "up_warm_detail"):
        if raw.get(key):
            for part in ("server_ready", "worker_ready"):
                out[f"{key}_{part}_seconds"] = summary([d[part] for d in raw[key]])
    lat = raw.get("latency") or []
    keys = ["submit_to_work", "submit_to_running", "submit_to_final", *(p for p, _ in PHASES)]
    for key in keys:
        values = [r[key] for r in lat if r.get(key) is not None]
        if values:
            out[key + "_seconds"] = summary(values)
    tasks = {name for r in lat for name in r.get("task_runs", {})}
    for name in sorted(tasks):
        values = [r["task_runs"][name]["seconds"] for r in lat if name in r.get("task_runs", {})]
        out[f"task_run_{name}_seconds"] = summary(values)
    bursts = raw.get("burst") or []
    if bursts:
        out["burst_tasks_per_second"] = summary([b["tasks_per_second"] for b in bursts], 3)
        out["burst_wall_seconds"] = summary([b["wall_seconds"] for b in bursts])
        out["burst_machine_cpu_seconds_per_task"] = summary(
            [b["machine_cpu_seconds_per_task"] for b in bursts]
        )
        out["burst_all_completed"] = all(b["completed"] == b["tasks"] for b in bursts)
        out["burst_one_submission_p50_seconds"] = summary(
            [b["one_submission_p50_seconds"] for b in bursts], 3
        )
        out["burst_one_submission_max_seconds"] = summary(
            [b["one_submission_max_seconds"] for b in bursts], 3
        )
    if "database_locked" in raw:
        out["database_locked_errors"] = raw["database_locked"]
    return out


def _ratios(conductor: dict[str, Any], stock: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in conductor.items():
        other = stock.get(key)
        if isinstance(value, dict) and isinstance(other, dict) and other.get("median"):
            out[key] = round(value["median"] / other["median"], 2)
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="latency runs and start-up rounds")
    p.add_argument("--tasks", type=int, default=50, help="runs per throughput round")
    p.add_argument("--agents", type=int, default=4, help="agent slots / pool concurrency")
    p.add_argument("--rounds", type=int, default=3, help="throughput rounds")
    p.add_argument("--idle-seconds", type=float, default=20.0, help="wait before memory")
    p.add_argument("--query-seconds", type=float, default=None, help="Conductor's poll")
    p.add_argument("--no-dashboard", action="store_true", help="skip the dashboard-on figures")
    p.add_argument("--no-pyc", action="store_true", help="no private bytecode cache")
    p.add_argument("--seed", type=int, default=7, help="for the random pauses")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--note", default="", help="a line added to the summary")
    return p


def main() -> int:
    args = _parser().parse_args()
    # Keep the user's own Conductor/Prefect configuration out of it.
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CONDUCTOR_", "PREFECT_"))}
    os.environ.clear()
    os.environ.update(base)
    env = bench_env(not args.no_pyc)
    # SIGTERM (e.g. a timeout) unwinds through the cleanup below instead of leaving processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = datetime.now(UTC)
    result: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_start": load_average(),
        "parameters": {
            "runs": args.runs,
            "tasks": args.tasks,
            "agents": args.agents,
            "rounds": args.rounds,
            "idle_seconds": args.idle_seconds,
            "conductor_query_seconds": args.query_seconds or WorkerSettings().query_seconds,
            "stock_query_seconds": STOCK_QUERY_SECONDS,
            "bytecode": "none (as the environment says)"
            if args.no_pyc
            else "private PYTHONPYCACHEPREFIX cache, filled by compileall first",
            "seed": args.seed,
        },
        "note": args.note,
    }
    if not args.no_pyc:
        result["parameters"]["compileall_seconds"] = compile_bytecode(env)
    with tempfile.TemporaryDirectory(prefix="conductor-compare-") as tmp:
        os.environ["CONDUCTOR_HOME"] = str(Path(tmp) / "unused-home")
        bench = Bench(args, Path(tmp), env)
        try:
            for index in range(args.runs):
                print(f"start-up round {index + 1}/{args.runs}", file=sys.stderr)
                bench.startup_round(index)
            print("conductor: latency and throughput", file=sys.stderr)
            bench.conductor_runs()
            print("stock prefect: latency and throughput", file=sys.stderr)
            bench.stock_runs()
        finally:
            bench.cleanup()
    result["load_average_end"] = load_average()
    result["duration_minutes"] = round((datetime.now(UTC) - started).total_seconds() / 60, 1)
    conductor, stock = _figures(bench.raw["conductor"]), _figures(bench.raw["stock"])
    result["conductor"], result["stock"] = conductor, stock
    result["ratios_conductor_over_stock"] = _ratios(conductor, stock)
    result["raw"] = bench.raw
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / f"standalone-{started.date().isoformat()}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    stem.with_suffix(".md").write_text(_report.markdown(result))
    print(stem.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
