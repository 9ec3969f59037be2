"""The standalone tier against stock Prefect (a process worker at Prefect's default settings
and at tuned ones), in one run, so every row of issue 10's goals table has both sides.

    .venv/bin/python benchmarks/standalone_compare.py             # the full run (about 1 h)
    .venv/bin/python benchmarks/standalone_compare.py --quick     # every row, small (minutes)

Rows (each as min / median / p95 / max where it is a series):

(a) submit -> work starts (the command a task runs, or the stock flow's body, writes the time
    it started): ``--runs`` runs one at a time, each after a random pause of up to one poll
    interval; phases from the runs' state history.
(b) throughput from a pre-created backlog: the pool is paused, ``--backlog`` runs (e.g. 50 and
    200) are created, the pool is resumed; tasks/s from the resume to the last final state,
    with ``--agents`` slots (Conductor: agent slots; stock: the pool's concurrency limit).
(c) one submission during a burst: ``--tasks`` runs submitted back to back while they start
    running; each submission's own time (p50 / max).
(d) ``--concurrent`` flow runs created at once (as many ``run_deployment`` callers would; raw
    POSTs, no client retry): refusals (503 ...) counted.
(e) ``conductor status`` while ``--flood`` tasks flood 2 slots: the command's wall time
    (a new process each time, as a user runs it) and the in-process status call, p50 / p95.
(f) "database is locked" errors in each server's log over (a)-(e).
(g) idle memory ``--idle-seconds`` after ready: RSS, PSS and USS of every process started
    (server, worker, forkserver), by process.
(h) memory per running agent: ``--agents`` runs held running; Conductor: each run's
    supervisor and engine (the command itself, standing for ``claude``, left out); stock: the
    worker's descendants per run.
(i) start-up: ``standalone.up`` cold (fresh home) and warm (after ``down``), with where the
    time goes (its steps); stock: ``prefect server start`` to healthy, then ``prefect worker
    start`` to its first heartbeat.

Conductor runs with the tier's defaults (the conductor worker: forked runs, woken by events,
fallback poll every 10 s); stock with Prefect's (poll every 10 s) and tuned (``--tuned-query-
seconds``, 0.5). Stacks never run at the same time. With ``--pyc`` (the default) every process
uses a private bytecode cache filled beforehand by ``python -m compileall``. Writes
``<out-dir>/standalone-<date>.json`` and ``.md``; everything started is stopped again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
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
    process_memory,
    summary,
)
from _runs import backlog, burst, concurrent_submissions, latency, wait_final
from _stock_prefect import POOL, StockStack, reap_all
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import StateType

from claude_conductor.client.connection import conductor_client
from claude_conductor.client.tasks import submit_task
from claude_conductor.flows.fanout import submission_tags
from claude_conductor.models import TaskSpec
from claude_conductor.settings import (
    ConductorSettings,
    DashboardSettings,
    ServerSettings,
    WorkerSettings,
)
from claude_conductor.system import processes
from claude_conductor.tiers import standalone
from claude_conductor.work_pools.forking import run_records_dir

STOCK_QUERY_SECONDS = 10.0  # Prefect's default PREFECT_WORKER_QUERY_SECONDS
Submit = Callable[[PrefectClient, int, Path], Awaitable[UUID]]


def _settings(home: Path, agents: int) -> ConductorSettings:
    return ConductorSettings(
        home=home,
        server=ServerSettings(port=free_port()),
        worker=WorkerSettings(agents=agents),
        dashboard=DashboardSettings(enabled=False, port=free_port()),
    )


def _timed(fn: Any, *args: Any, **kwargs: Any) -> float:
    began = time.monotonic()
    fn(*args, **kwargs)
    return time.monotonic() - began


def _timed_up(settings: ConductorSettings, env: dict[str, str], **kwargs: Any) -> dict[str, Any]:
    """``standalone.up`` timed, with the seconds spent in each of its steps."""
    marks: list[tuple[float, str]] = []
    began = time.monotonic()
    standalone.up(
        settings, base_env=env, on_step=lambda s: marks.append((time.monotonic(), s)), **kwargs
    )
    end = time.monotonic()
    steps = {}
    for (at, name), (nxt, _) in zip(marks, [*marks[1:], (end, "")], strict=True):
        key = name.split(" at http")[0]
        steps[key] = round(steps.get(key, 0.0) + nxt - at, 2)
    return {"total": round(end - began, 2), "steps": steps}


def _locked(log: Path) -> int:
    """SQLite "database is locked" errors a server logged."""
    try:
        return log.read_text(encoding="utf-8", errors="replace").count("database is locked")
    except OSError:
        return -1


def _percentiles(values: list[float]) -> dict[str, Any]:
    return summary(values, 3)


class Bench:
    def __init__(self, args: argparse.Namespace, root: Path, env: dict[str, str]) -> None:
        self.args = args
        self.root = root
        self.env = env
        self.rng = random.Random(args.seed)
        self.homes: list[ConductorSettings] = []
        self.stacks: list[StockStack] = []
        self.raw: dict[str, dict[str, Any]] = {"conductor": {}, "stock": {}, "stock_tuned": {}}

    def _add(self, side: str, key: str, value: Any) -> None:
        self.raw[side].setdefault(key, []).append(value)

    def conductor(self, name: str, agents: int | None = None) -> ConductorSettings:
        settings = _settings(self.root / name, agents or self.args.agents)
        self.homes.append(settings)
        return settings

    def stock(self, name: str, query_seconds: float | None = None) -> StockStack:
        stack = StockStack(self.root / name, self.env, query_seconds)
        self.stacks.append(stack)
        return stack

    # -- (g) and (i): start-up and idle memory ------------------------------------------------

    def startup_round(self, index: int) -> None:
        env = self.env
        settings = self.conductor(f"conductor-{index}")
        cold = _timed_up(settings, env)
        self._add("conductor", "up_cold", cold["total"])
        self._add("conductor", "up_cold_steps", cold["steps"])
        self._add("conductor", "down", _timed(standalone.down, settings))
        warm = _timed_up(settings, env)
        self._add("conductor", "up_warm", warm["total"])
        self._add("conductor", "up_warm_steps", warm["steps"])
        time.sleep(self.args.idle_seconds)
        self._add("conductor", "idle_memory", memory(standalone.status(settings).pids))
        self._add("conductor", "down", _timed(standalone.down, settings))
        if self.args.dashboard:
            up = _timed(standalone.up, settings, dashboard=True, base_env=env)
            self._add("conductor", "up_warm_dashboard", up)
            time.sleep(self.args.idle_seconds)
            self._add(
                "conductor", "idle_memory_dashboard", memory(standalone.status(settings).pids)
            )
            self._add("conductor", "down", _timed(standalone.down, settings))

        stack = self.stock(f"stock-{index}")
        detail = stack.up()
        self._add("stock", "up_cold_detail", detail)
        self._add("stock", "up_cold", detail["total"])
        self._add("stock", "down", stack.stop())
        detail = stack.up()
        self._add("stock", "up_warm_detail", detail)
        self._add("stock", "up_warm", detail["total"])
        time.sleep(self.args.idle_seconds)
        self._add("stock", "idle_memory", stack.memory())
        self._add("stock", "down", stack.stop())

    # -- (a)-(f), (h): one stack per side -----------------------------------------------------

    async def _series(
        self,
        side: str,
        client: PrefectClient,
        submit: Submit,
        *,
        pool: str,
        jitter_seconds: float,
        concurrent_bodies: Callable[[int, Path], list[dict[str, Any]]],
        deployment_id: UUID,
        api_url: str,
        hold: Callable[[PrefectClient, int], Awaitable[dict[str, Any]]],
    ) -> None:
        args, raw = self.args, self.raw[side]
        marks = self.root / f"marks-{side}"
        marks.mkdir()
        raw["load_average_before_runs"] = load_average()
        print(f"  {side}: (a) latency", file=sys.stderr)
        raw["latency"] = await latency(
            client, submit, marks, args.runs, jitter_seconds=jitter_seconds, rng=self.rng
        )
        for size in args.backlog:
            print(f"  {side}: (b) backlog of {size}", file=sys.stderr)
            folder = marks / f"backlog-{size}"
            folder.mkdir()
            self._add(side, "backlog", await backlog(client, submit, folder, size, pool))
        print(f"  {side}: (c) burst of {args.tasks}", file=sys.stderr)
        folder = marks / "burst"
        folder.mkdir()
        raw["burst"] = [await burst(client, submit, folder, args.tasks)]
        print(f"  {side}: (d) {args.concurrent} at once", file=sys.stderr)
        folder = marks / "concurrent"
        folder.mkdir()
        result = await concurrent_submissions(
            api_url, deployment_id, concurrent_bodies(args.concurrent, folder)
        )
        await wait_final(client, [UUID(i) for i in result.pop("ids")], 1800, poll_seconds=1.0)
        raw["concurrent"] = result
        print(f"  {side}: (h) memory of {args.agents} running runs", file=sys.stderr)
        raw["running_memory"] = await hold(client, args.agents)

    def conductor_runs(self) -> None:
        settings = self.conductor("conductor-runs")
        repo = make_repo(self.root)
        # The command writes when it started to a file outside its worktree, which the
        # commands' sandbox refuses: it is off here (it costs about 9 ms a command, see
        # shell_sandbox.py), as stock Prefect has none.
        standalone.up(settings, base_env={**self.env, "CONDUCTOR_AGENT__SANDBOX": "false"})

        def spec(mark: Path, command: str | None = None) -> TaskSpec:
            return TaskSpec(
                kind="command",
                command=command or f"date +%s.%N >> {shlex.quote(str(mark))}",
                repo=str(repo),
                title=f"bench {mark.stem}",
            )

        async def submit(client: PrefectClient, index: int, mark: Path) -> UUID:
            return (await submit_task(client, spec(mark))).id

        def bodies(count: int, folder: Path) -> list[dict[str, Any]]:
            out = []
            for index in range(count):
                one = spec(folder / f"at-once-{index}.txt")
                out.append(
                    {
                        "parameters": {"spec": one.model_dump(mode="json")},
                        "name": one.id,
                        "tags": submission_tags(one),
                        "idempotency_key": one.id,
                    }
                )
            return out

        async def hold(client: PrefectClient, count: int) -> dict[str, Any]:
            """``count`` tasks running ``sleep``: each run's own processes, measured."""
            gate = self.root / "conductor-gate"
            command = (
                f"for i in $(seq {int(self.args.hold_seconds * 5)}); do "
                f"[ -e {shlex.quote(str(gate))} ] && break; sleep 0.2; done"
            )
            ids = [(await submit_task(client, spec(Path("-"), command))).id for _ in range(count)]
            labels = {f"flow run {i}" for i in ids}
            records_dir = run_records_dir(settings)

            def engines() -> list[processes.ProcessRecord]:
                return [r for r in processes.recorded_processes(records_dir) if r.label in labels]

            deadline = time.monotonic() + 120
            while len(engines()) < count:
                assert time.monotonic() < deadline, "the runs did not all start"
                await asyncio.sleep(0.2)
            await asyncio.sleep(2)  # past each engine's start-up, into the command
            per_run = []
            for record in engines():
                engine = process_memory(record.pid)
                supervisor = process_memory(_parent(record.pid))
                per_run.append(
                    {
                        "engine": engine,
                        "supervisor": supervisor,
                        **{k: round(engine[k] + supervisor[k], 1) for k in engine},
                    }
                )
            gate.touch()
            await wait_final(client, ids, 600, poll_seconds=1.0)
            return {"runs": per_run}

        async def go() -> None:
            async with conductor_client(settings) as client:
                deployment = await client.read_deployment_by_name("conductor-task/run")
                await self._series(
                    "conductor",
                    client,
                    submit,
                    pool=settings.worker.pool,
                    jitter_seconds=1.0,
                    concurrent_bodies=bodies,
                    deployment_id=deployment.id,
                    api_url=settings.server.url,
                    hold=hold,
                )

        try:
            asyncio.run(go())
            print("  conductor: (e) status while tasks flood 2 slots", file=sys.stderr)
            self.raw["conductor"]["status_flood"] = self._status_flood(settings, spec)
        finally:
            self.raw["conductor"]["database_locked"] = _locked(
                settings.logs_dir / "prefect-server.log"
            )
            standalone.down(settings)

    def _status_flood(self, settings: ConductorSettings, spec: Any) -> dict[str, Any]:
        """``--flood`` tasks of ``sleep 1`` on 2 agent slots; meanwhile ``conductor status``
        (a new process, as a user runs it) and the in-process status call, timed."""
        before = settings.worker.agents
        standalone.scale_agents(settings, 2)
        env = {
            **self.env,
            "CONDUCTOR_HOME": str(settings.home),
            "CONDUCTOR_SERVER__PORT": str(settings.server.port),
        }
        cli = [sys.executable, "-m", "claude_conductor.cli.main", "status", "--json"]
        idle_cli = [_timed(subprocess.run, cli, env=env, capture_output=True) for _ in range(3)]

        async def flood() -> list[UUID]:
            async with conductor_client(settings) as client:
                return [
                    (await submit_task(client, spec(Path("-"), "sleep 1"))).id
                    for _ in range(self.args.flood)
                ]

        ids = asyncio.run(flood())
        command: list[float] = []
        in_process: list[float] = []
        for _ in range(self.args.status_samples):
            out_seconds = _timed(subprocess.run, cli, env=env, capture_output=True, check=True)
            command.append(out_seconds)
            in_process.append(_timed(standalone.status, settings))

        async def drain() -> int:
            async with conductor_client(settings) as client:
                runs = await wait_final(client, ids, 1800, poll_seconds=1.0)
                return sum(1 for r in runs if r.state is not None and r.state.is_completed())

        completed = asyncio.run(drain())
        standalone.scale_agents(settings, before)
        return {
            "tasks": self.args.flood,
            "completed": completed,
            "command_seconds": _percentiles(command),
            "in_process_seconds": _percentiles(in_process),
            "command_idle_seconds": _percentiles(idle_cli),
        }

    def stock_runs(self, side: str, query_seconds: float | None) -> None:
        stack = self.stock(f"{side}-runs", query_seconds)
        stack.up()

        async def go() -> None:
            deployment_id = await stack.deploy(concurrency_limit=self.args.agents)

            async def submit(client: PrefectClient, index: int, mark: Path) -> UUID:
                run = await client.create_flow_run_from_deployment(
                    deployment_id, parameters={"mark": str(mark)}
                )
                return run.id

            def bodies(count: int, folder: Path) -> list[dict[str, Any]]:
                return [
                    {"parameters": {"mark": str(folder / f"at-once-{i}.txt")}} for i in range(count)
                ]

            async def hold(client: PrefectClient, count: int) -> dict[str, Any]:
                gate = stack.root / "gate"
                ids = [
                    (
                        await client.create_flow_run_from_deployment(
                            deployment_id,
                            parameters={
                                "mark": os.devnull,
                                "gate": str(gate),
                                "sleep_seconds": self.args.hold_seconds,
                            },
                        )
                    ).id
                    for _ in range(count)
                ]
                deadline = time.monotonic() + 180
                while True:
                    running = await client.read_flow_runs(
                        flow_run_filter=FlowRunFilter(
                            state=FlowRunFilterState(
                                type=FlowRunFilterStateType(any_=[StateType.RUNNING])
                            )
                        )
                    )
                    if len(running) >= count:
                        break
                    assert time.monotonic() < deadline, "the runs did not all start"
                    await asyncio.sleep(0.2)
                await asyncio.sleep(2)
                figures = [process_memory(p) for p in stack.flow_run_processes()]
                total = {k: round(sum(f[k] for f in figures), 1) for k in figures[0]}
                per = {k: round(v / count, 1) for k, v in total.items()}
                gate.touch()
                await wait_final(client, ids, 600, poll_seconds=1.0)
                return {"runs": [per] * count, "processes": len(figures)}

            async with stack.client() as client:
                await self._series(
                    side,
                    client,
                    submit,
                    pool=POOL,
                    jitter_seconds=stack.query_seconds,
                    concurrent_bodies=bodies,
                    deployment_id=deployment_id,
                    api_url=stack.api_url,
                    hold=hold,
                )

        try:
            asyncio.run(go())
        finally:
            stack.stop()
            self.raw[side]["database_locked"] = _locked(stack.root / "stock-server.log")

    def cleanup(self) -> None:
        for settings in self.homes:
            try:
                standalone.down(settings)
            except Exception as exc:
                print(f"warning: down of {settings.home} failed: {exc}", file=sys.stderr)
        for stack in self.stacks:
            stack.stop()
        for folder in self.root.glob("stock*"):
            reap_all(folder)


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return 0
    return int(stat[stat.rfind(b")") + 2 :].split()[1])


# -- figures ------------------------------------------------------------------------------------


def _figures(raw: dict[str, Any]) -> dict[str, Any]:
    """min / median / p95 / max of every measure of one side."""
    out: dict[str, Any] = {}
    for key in ("up_cold", "up_warm", "up_warm_dashboard", "down"):
        if raw.get(key):
            out[key + "_seconds"] = summary(raw[key])
    for key in ("up_cold_steps", "up_warm_steps"):
        steps = raw.get(key) or []
        names = sorted({name for s in steps for name in s})
        if names:
            out[key] = {n: statistics.median([s.get(n, 0.0) for s in steps]) for n in names}
    for key in ("idle_memory", "idle_memory_dashboard"):
        if raw.get(key):
            for unit in ("rss", "pss", "uss"):
                out[f"{key}_{unit}_mib"] = summary([m[f"{unit}_mib"] for m in raw[key]], 1)
    for key in ("up_cold_detail", "up_warm_detail"):
        if raw.get(key):
            for part in ("server_ready", "worker_ready"):
                out[f"{key}_{part}_seconds"] = summary([d[part] for d in raw[key]])
    lat = raw.get("latency") or []
    for key in ("submit_to_work", "submit_to_running", "submit_to_final", "submit_to_pending",
                "pending_to_running", "running_to_work", "work_to_final"):  # fmt: skip
        values = [r[key] for r in lat if r.get(key) is not None]
        if values:
            out[key + "_seconds"] = summary(values, 3)
    for b in raw.get("backlog") or []:
        out[f"backlog_{b['tasks']}_tasks_per_second"] = summary([b["tasks_per_second"]], 3)
        out[f"backlog_{b['tasks']}_completed"] = b["completed"]
    bursts = raw.get("burst") or []
    if bursts:
        out["burst_one_submission_p50_seconds"] = summary(
            [b["one_submission_p50_seconds"] for b in bursts], 3
        )
        out["burst_one_submission_max_seconds"] = summary(
            [b["one_submission_max_seconds"] for b in bursts], 3
        )
        out["burst_tasks_per_second"] = summary([b["tasks_per_second"] for b in bursts], 3)
    if raw.get("concurrent"):
        out["concurrent_refused"] = raw["concurrent"]["refused"]
        out["concurrent_status_codes"] = raw["concurrent"]["status_codes"]
        out["concurrent_one_call_max_seconds"] = summary(
            [raw["concurrent"]["one_call_max_seconds"]], 3
        )
    flood = raw.get("status_flood")
    if flood:
        out["status_flood_command_seconds"] = flood["command_seconds"]
        out["status_flood_in_process_seconds"] = flood["in_process_seconds"]
        out["status_idle_command_seconds"] = flood["command_idle_seconds"]
    held = (raw.get("running_memory") or {}).get("runs") or []
    if held:
        for unit in ("rss", "pss", "uss"):
            out[f"running_memory_per_run_{unit}_mib"] = summary([r[f"{unit}_mib"] for r in held], 1)
    if "database_locked" in raw:
        out["database_locked_errors"] = raw["database_locked"]
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="every row, small: a few minutes")
    p.add_argument("--runs", type=int, default=10, help="latency runs")
    p.add_argument("--startup-rounds", type=int, default=3, help="cold/warm start-up rounds")
    p.add_argument("--backlog", type=int, nargs="+", default=[50, 200], help="backlog sizes")
    p.add_argument("--tasks", type=int, default=50, help="runs in the submission burst")
    p.add_argument("--concurrent", type=int, default=50, help="runs created at once")
    p.add_argument("--flood", type=int, default=40, help="tasks flooding 2 slots")
    p.add_argument("--status-samples", type=int, default=20, help="status calls meanwhile")
    p.add_argument("--agents", type=int, default=4, help="agent slots / pool concurrency")
    p.add_argument("--hold-seconds", type=float, default=300.0, help="(h): runs held at most")
    p.add_argument("--idle-seconds", type=float, default=20.0, help="wait before memory")
    p.add_argument("--tuned-query-seconds", type=float, default=0.5, help="stock, tuned")
    p.add_argument("--dashboard", action="store_true", help="also start-up with the dashboard")
    p.add_argument("--no-pyc", action="store_true", help="no private bytecode cache")
    p.add_argument("--seed", type=int, default=7, help="for the random pauses")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--note", default="", help="a line added to the summary")
    return p


_QUICK = {
    "runs": 5,
    "startup_rounds": 1,
    "backlog": [20],
    "tasks": 20,
    "concurrent": 20,
    "flood": 12,
    "status_samples": 6,
    "idle_seconds": 8.0,
}


def main() -> int:
    parser = _parser()
    args = parser.parse_args()
    if args.quick:  # quick sizes, unless given on the command line
        given = {a.split("=")[0].lstrip("-").replace("-", "_") for a in sys.argv[1:]}
        for key, value in _QUICK.items():
            if key not in given:
                setattr(args, key, value)
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
            "quick": args.quick,
            "runs": args.runs,
            "startup_rounds": args.startup_rounds,
            "backlog": args.backlog,
            "tasks": args.tasks,
            "concurrent": args.concurrent,
            "flood": args.flood,
            "status_samples": args.status_samples,
            "agents": args.agents,
            "hold_seconds": args.hold_seconds,
            "idle_seconds": args.idle_seconds,
            "conductor_query_seconds": WorkerSettings().query_seconds,
            "stock_query_seconds": STOCK_QUERY_SECONDS,
            "stock_tuned_query_seconds": args.tuned_query_seconds,
            "bytecode": "none (as the environment says)"
            if args.no_pyc
            else "private PYTHONPYCACHEPREFIX cache, filled by compileall first",
            "seed": args.seed,
        },
        "note": args.note,
    }
    if not args.no_pyc:
        result["parameters"]["compileall_seconds"] = compile_bytecode(env)
    loads: list[list[float]] = []
    with tempfile.TemporaryDirectory(prefix="conductor-compare-") as tmp:
        os.environ["CONDUCTOR_HOME"] = str(Path(tmp) / "unused-home")
        bench = Bench(args, Path(tmp), env)
        phases: list[tuple[str, Callable[[], None]]] = [
            *(
                (f"start-up round {i + 1}/{args.startup_rounds}", partial(bench.startup_round, i))
                for i in range(args.startup_rounds)
            ),
            ("conductor: runs", bench.conductor_runs),
            ("stock prefect (default): runs", partial(bench.stock_runs, "stock", None)),
            (
                "stock prefect (tuned): runs",
                partial(bench.stock_runs, "stock_tuned", args.tuned_query_seconds),
            ),
        ]
        try:
            for name, phase in phases:
                print(name, file=sys.stderr)
                try:
                    phase()
                except Exception as exc:  # the other phases still run; the report says so
                    traceback.print_exc()
                    result.setdefault("errors", []).append(f"{name}: {type(exc).__name__}: {exc}")
                loads.append(load_average())
        finally:
            bench.cleanup()
    result["load_average_end"] = load_average()
    result["load_average_samples"] = loads
    result["duration_minutes"] = round((datetime.now(UTC) - started).total_seconds() / 60, 1)
    for side in bench.raw:
        result[side] = _figures(bench.raw[side])
    result["raw"] = bench.raw
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / f"standalone-{started.date().isoformat()}{'-quick' if args.quick else ''}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    stem.with_suffix(".md").write_text(_report.markdown(result))
    print(stem.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
