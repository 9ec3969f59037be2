"""The control plane's load at up to 1000 concurrent agents: one Prefect API replica on
PostgreSQL with Redis messaging, split as the Kubernetes tier deploys it, under N virtual
Conductor agents.

    .venv/bin/python benchmarks/control_plane_load.py                 # 100, 250, 500, 1000
    .venv/bin/python benchmarks/control_plane_load.py --quick --out-dir /tmp/cp   # < 1 min

Starts Debian's PostgreSQL and Redis in a temp dir (loopback, free ports), migrates, starts
``prefect server start --no-services`` and ``prefect server services start``, registers the
``conductor-task/run`` deployment with Conductor's own code, then for each step of the ramp
runs load-generator processes (``_virtual_agent.py``) whose virtual agents each do what a
running Conductor task does to the API (see that module). For each step it records API
latency per request type (p50/p95/p99 over the steady window), non-2xx and error counts,
CPU seconds per task of the API, the services, PostgreSQL, Redis (psutil, process trees),
the generators and everything else on the machine, how long the task-run recorder took to
catch up, and where one replica's p95 passes ``--threshold-ms``.

Writes ``<out-dir>/control-plane-<date>.json`` and ``.md``. Everything started is stopped
(by PID) on success, failure, Ctrl-C and SIGTERM. Exit 2 on bad options or missing binaries.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _load_report
import psutil
from _common import RESULTS, ROOT, bench_env, load_average, machine, stop_pids
from _control_plane_stack import (
    MissingBinary,
    Stack,
    log_errors,
    process_cpu_seconds,
    process_rss_mib,
    start_stack,
)
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import StateType
from pydantic import SecretStr

from claude_conductor.client.connection import conductor_client, run_sync
from claude_conductor.client.deployments import register_deployments
from claude_conductor.settings import ConductorSettings, ServerSettings, WorkerSettings
from claude_conductor.work_pools.deployments import TASK_DEPLOYMENT
from claude_conductor.work_pools.pools import (
    DEFAULT_QUEUE,
    ensure_pools,
    pool_name,
    set_agent_slots,
)

GENERATOR = Path(__file__).with_name("_virtual_agent.py")
_COMPONENTS = ("api", "services", "postgres", "redis")
SIMULATED = [
    "- Simulated, per task, with Prefect's own client (`PrefectClient`, `PrefectEventsClient`) "
    "and Conductor's `submit_task`: the submission (read deployment, create flow run); the "
    "worker's part (read deployment and flow, Pending, labels, Pending 'Submitting', "
    "infrastructure PID, its log lines, its two events); the flow-run process's part (reads, "
    "version checks, pull-step event and logs, update, Running, a heartbeat event every "
    "heartbeat interval, four task runs as Pending/Running/Completed events, agent log lines "
    "in batches, the `report-<id>` and `result-<id>` artifacts with their events, Completed). "
    "The sequence was taken from a traced real `conductor-task` run (Prefect 3.8.8).",
    "- Each agent has its own HTTP client and its own events websocket, as each flow-run "
    "process has; the workers' events share one websocket per generator.",
    "- Not simulated: the agents' own work (no `claude`, no git, no model), worker polling "
    "(`get_scheduled_flow_runs`) and worker heartbeats (they grow with the number of workers, "
    "not of tasks; each poll costs the server about 15-18 ms of CPU, FACTS.md), the dashboard, "
    "`conductor tasks show --wait` polling, the Prometheus exporter, automations.",
    "- Everything runs on one machine: the generators, PostgreSQL and Redis take CPU from the "
    "API replica, which a cluster would not; the figures are a floor for one replica, not a "
    "forecast for a cluster.",
]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--agents",
        default="100,250,500,1000",
        help="concurrent agents per step, comma-separated (default 100,250,500,1000)",
    )
    ap.add_argument("--task-min-seconds", type=float, default=60.0)
    ap.add_argument("--task-max-seconds", type=float, default=120.0)
    ap.add_argument(
        "--step-seconds",
        type=float,
        default=240.0,
        help="how long each step starts new tasks (default 240)",
    )
    ap.add_argument(
        "--stagger-seconds",
        type=float,
        default=None,
        help="agents start over this many seconds (default: --task-min-seconds)",
    )
    ap.add_argument("--generators", type=int, default=2, help="load-generator processes")
    ap.add_argument("--log-lines-per-minute", type=float, default=20.0)
    ap.add_argument("--log-batch-seconds", type=float, default=2.0)
    ap.add_argument(
        "--heartbeat-seconds",
        type=float,
        default=30.0,
        help="flow-run heartbeat interval (Conductor's job templates: 30)",
    )
    ap.add_argument(
        "--dispatch-seconds", type=float, default=1.0, help="submit -> the worker picks the run up"
    )
    ap.add_argument(
        "--process-start-seconds",
        type=float,
        default=2.0,
        help="the worker's Pending -> the flow-run process talks to the API",
    )
    ap.add_argument("--threshold-ms", type=float, default=500.0)
    ap.add_argument(
        "--db-pool-size",
        type=int,
        default=None,
        help="the API's and services' SQLAlchemy pool size (Prefect's default: 5)",
    )
    ap.add_argument(
        "--db-max-overflow",
        type=int,
        default=None,
        help="connections beyond the pool (Prefect's default: 10)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a small smoke run: 4 and 8 agents, 2-4 s tasks, 8 s steps",
    )
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    ap.add_argument("--note", default="")
    ap.add_argument("--label", default="", help="appended to the results' file names")
    args = ap.parse_args(argv)
    if args.quick:
        args.agents, args.task_min_seconds, args.task_max_seconds = "4,8", 2.0, 4.0
        args.step_seconds, args.dispatch_seconds, args.process_start_seconds = 6.0, 0.2, 0.2
        args.log_lines_per_minute, args.log_batch_seconds = 60.0, 1.0
    try:
        args.agent_steps = [int(x) for x in str(args.agents).split(",") if x.strip()]
    except ValueError:
        ap.error(f"--agents {args.agents!r} is not a comma-separated list of integers, "
                 "e.g. 100,250,500,1000")  # fmt: skip
    if not args.agent_steps or min(args.agent_steps) < 1:
        ap.error(f"--agents {args.agents!r}: every step needs at least 1 agent")
    if not 0 < args.task_min_seconds <= args.task_max_seconds:
        ap.error(f"--task-min-seconds {args.task_min_seconds:g} / --task-max-seconds "
                 f"{args.task_max_seconds:g}: need 0 < min <= max")  # fmt: skip
    if args.generators < 1 or args.step_seconds <= 0 or args.log_batch_seconds <= 0:
        ap.error("--generators, --step-seconds and --log-batch-seconds must be positive")
    if args.stagger_seconds is None:
        args.stagger_seconds = min(args.task_min_seconds, args.step_seconds / 2)
    return args


def _register(stack: Stack, max_agents: int) -> dict[str, str]:
    """Conductor's pools and its ``conductor-task/run`` deployment, as ``conductor up`` and
    the Kubernetes tier's configure Job register them; returns the ids the agents need."""
    settings = ConductorSettings(
        home=stack.root / "conductor-home",
        server=ServerSettings(api_url=stack.api_url, auth_string=SecretStr(stack.auth_string)),
        worker=WorkerSettings(agents=min(64, max_agents)),
    )

    async def pools() -> dict[str, str]:
        async with conductor_client(settings) as client:
            await ensure_pools(client, settings)
            await set_agent_slots(client, settings, max_agents)
            pool = await client.read_work_pool(pool_name(settings, "agents"))
            queues = await client.read_work_queues(work_pool_name=pool.name)
            queue = next(q for q in queues if q.name == DEFAULT_QUEUE)
            return {"pool": str(pool.id), "pool_name": pool.name, "queue": str(queue.id),
                    "queue_name": queue.name}  # fmt: skip

    ids = run_sync(pools())
    deployment_id = register_deployments(settings, (TASK_DEPLOYMENT,))[TASK_DEPLOYMENT.full_name]

    async def flow() -> str:
        async with conductor_client(settings) as client:
            return str((await client.read_deployment(deployment_id)).flow_id)

    return {**ids, "deployment": str(deployment_id), "flow": run_sync(flow())}


def _cpu(stack: Stack) -> dict[str, float]:
    return {name: process_cpu_seconds(stack.pids[name]) for name in _COMPONENTS}


def _machine_busy_seconds() -> float:
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)
                 + getattr(t, "steal", 0))  # fmt: skip


async def _count(stack: Stack, step: int) -> tuple[int, int]:
    """(task runs recorded, flow runs Completed) of a step's flow runs."""
    settings = ConductorSettings(
        server=ServerSettings(api_url=stack.api_url, auth_string=SecretStr(stack.auth_string))
    )
    tagged = FlowRunFilter(tags=FlowRunFilterTags(all_=[f"bench-step:{step}"]))
    async with conductor_client(settings, check=False) as client:
        response = await client.request(
            "POST", "/task_runs/count", json={"flow_runs": tagged.model_dump(mode="json")}
        )
        task_runs = int(response.json())
        done = await client.count_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[f"bench-step:{step}"]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED])),
            )
        )
    return task_runs, done


def _drain(
    stack: Stack, step: int, expected: int, timeout_seconds: float
) -> tuple[float, int, int]:
    """Wait until the services recorded every task run of the step (they arrive as events)."""
    began = time.monotonic()
    recorded = done = 0
    while time.monotonic() - began < timeout_seconds:
        try:
            recorded, done = run_sync(_count(stack, step), timeout_seconds=60)
        except Exception as exc:  # an overloaded API: ask again until the timeout
            print(f"  counting runs: {type(exc).__name__}: {exc}"[:200], file=sys.stderr)
        else:
            if recorded >= expected:
                break
        time.sleep(0.5)
    return round(time.monotonic() - began, 1), recorded, done


def _run_step(stack: Stack, args: argparse.Namespace, ids: dict[str, str], step: int,
              agents: int, work: Path) -> dict[str, Any]:  # fmt: skip
    generators = min(args.generators, agents)
    procs: list[subprocess.Popen[bytes]] = []
    env = {**stack.client_env(), "NO_PROXY": "127.0.0.1,localhost"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "benchmarks"), env.get("PYTHONPATH", "")])
    try:
        for g in range(generators):
            out_path = work / f"step{step}-gen{g}.out.json"
            log = open(work / f"step{step}-gen{g}.log", "wb")  # noqa: SIM115
            proc = subprocess.Popen(
                [sys.executable, str(GENERATOR), str(out_path)], env=env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, start_new_session=True,
            )  # fmt: skip
            log.close()
            procs.append(proc)
        print(f"  load generators {[p.pid for p in procs]}", file=sys.stderr, flush=True)
        for proc in procs:  # each prints "ready" once Prefect is imported
            line = proc.stdout.readline() if proc.stdout else b""
            if line.strip() != b"ready":
                raise RuntimeError(
                    f"a load generator did not start: see {work}/step{step}-gen*.log"
                )
        start = time.time() + 0.5
        stop_starting = start + args.step_seconds
        tail = args.dispatch_seconds + args.process_start_seconds + args.task_max_seconds
        hard_stop = stop_starting + tail + max(30.0, tail)
        window = (start + args.stagger_seconds, stop_starting)
        cpu0, busy0, load0 = _cpu(stack), _machine_busy_seconds(), load_average()
        log_offsets = {n: (stack.root / f"{n}.log").stat().st_size for n in ("api", "services")}
        for g, proc in enumerate(procs):
            share = agents // generators + (1 if g < agents % generators else 0)
            cfg = {
                "api_url": stack.api_url, "auth_string": stack.auth_string, "ids": ids,
                "step": step, "generator": g, "generators": generators, "agents": share,
                "total_agents": agents, "seed": args.seed + step, "start_wall": start,
                "stop_starting_wall": stop_starting, "hard_stop_wall": hard_stop,
                "stagger_seconds": args.stagger_seconds,
                "task_min_seconds": args.task_min_seconds, "task_max_seconds": args.task_max_seconds,
                "log_lines_per_minute": args.log_lines_per_minute,
                "log_batch_seconds": args.log_batch_seconds,
                "heartbeat_seconds": args.heartbeat_seconds,
                "dispatch_seconds": args.dispatch_seconds,
                "process_start_seconds": args.process_start_seconds,
            }  # fmt: skip
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(cfg).encode() + b"\n")
            proc.stdin.close()
        rss: dict[str, float] = {}
        mid = (window[0] + window[1]) / 2
        while any(p.poll() is None for p in procs):
            stack.check_alive()
            if not rss and time.time() >= mid:
                rss = {name: process_rss_mib(stack.pids[name]) for name in _COMPONENTS}
            if time.time() > hard_stop + 60:
                raise RuntimeError(f"load generators still running 60 s after the step's end; "
                                   f"see {work}/step{step}-gen*.log")  # fmt: skip
            time.sleep(0.2)
        outputs = []
        for g, proc in enumerate(procs):
            out_path = work / f"step{step}-gen{g}.out.json"
            if proc.returncode != 0 or not out_path.exists():
                raise RuntimeError(f"load generator {g} failed (exit {proc.returncode}): "
                                   + (work / f"step{step}-gen{g}.log").read_text()[-1500:])  # fmt: skip
            outputs.append(json.loads(out_path.read_text()))
    finally:
        stop_pids([p.pid for p in procs if p.poll() is None], grace_seconds=5.0)
    merged = _load_report.merge_generators(outputs)
    completed = merged["counts"].get("tasks_completed", 0)
    drain, recorded, flow_done = _drain(
        stack, step, 4 * completed, 120.0 if not args.quick else 30.0
    )
    cpu1, busy1 = _cpu(stack), _machine_busy_seconds()
    server_errors = {n: log_errors(stack.root / f"{n}.log", log_offsets[n])[0] for n in log_offsets}
    cpu = {k: round(cpu1[k] - cpu0[k], 1) for k in _COMPONENTS}
    cpu["generators"] = merged["generator_cpu_seconds"]
    ours = sum(cpu.values())
    per_label, overall, statuses = _load_report.latency_table(merged["samples"], window)
    per_task = {k: round(v / completed, 3) if completed else None for k, v in cpu.items()}
    server_total = sum(cpu[k] for k in _COMPONENTS)
    per_task["server_total"] = round(server_total / completed, 3) if completed else None
    started = merged["counts"].get("tasks_started", 0)
    per_task["server_total_per_started_task"] = (
        round(server_total / started, 3) if started else None
    )
    return {
        "agents": agents,
        "generators": generators,
        "steady_seconds": round(window[1] - window[0], 1),
        "counts": merged["counts"],
        "errors": merged["errors"],
        "server_errors": server_errors,
        "statuses": statuses,
        "overall": overall,
        "per_request": per_label,
        "request_counts": {k: len(v) for k, v in sorted(merged["samples"].items())},
        "cpu_seconds": cpu,
        "cpu_seconds_per_task": per_task,
        "server_cpu_cores_busy": round(server_total / max(time.time() - start, 1e-9), 2),
        "other_processes_cpu_seconds": round(max(0.0, (busy1 - busy0) - ours), 1),
        "load_average_start": load0,
        "load_average_end": load_average(),
        "rss_mib": rss,
        "generator_loop_lag": merged["loop_lag"],
        "recorder_drain_seconds": drain,
        "task_runs_recorded": recorded,
        "flow_runs_completed": flow_done,
        "task_wall_seconds_median": sorted(merged["task_wall_seconds"])[
            len(merged["task_wall_seconds"]) // 2] if merged["task_wall_seconds"] else None,
    }  # fmt: skip


def _step_problems(step: dict[str, Any]) -> list[str]:
    """What went wrong in a step, most frequent first, one line each: the tasks that did not
    complete and why (the agents' errors), non-2xx answers, errors in the servers' logs."""
    counts, lines = step["counts"], []
    lost = {k: counts.get(f"tasks_{k}", 0) for k in ("failed", "unfinished")}
    if any(lost.values()):
        lines.append(
            f"{lost['failed']} failed and {lost['unfinished']} unfinished of "
            f"{counts.get('tasks_started', 0)} tasks started"
        )
    for error, times in sorted(step["errors"].items(), key=lambda kv: -kv[1])[:3]:
        lines.append(f"{times} x {' '.join(error.split())}"[:300])
    answers = {k: v for k, v in step["statuses"].items() if k != "2xx"}
    if answers:
        lines.append(f"non-2xx answers: {answers}")
    for server, errors in step["server_errors"].items():
        for error, times in sorted(errors.items(), key=lambda kv: -kv[1])[:2]:
            lines.append(f"{server} log: {times} x {error}"[:300])
    return lines


def _findings(
    steps: list[dict[str, Any]], cross: dict[str, Any], threshold: float, task_seconds: float
) -> list[str]:
    """The summary lines; ``task_seconds`` is a task's nominal life (submit to Completed on an
    idle control plane), which sets how often an agent starts a new one."""
    out = []
    if cross["passed"]:
        between = (
            f"between {cross['last_step_under']} and {cross['first_step_over']} agents "
            f"(about {cross['estimated_agents']} by linear interpolation)"
            if cross["last_step_under"]
            else f"already at {cross['first_step_over']} agents"
        )
        out.append(f"- One API replica's p95 passes {threshold:g} ms {between}; p95 there "
                   f"{cross['p95_ms']:g} ms.")  # fmt: skip
    else:
        out.append(
            f"- p95 stayed under {threshold:g} ms up to {cross['highest_step_under']} "
            "agents (the largest step run)."
        )
    for s in steps:
        per = s["cpu_seconds_per_task"]
        shares = {k: per[k] for k in (*_COMPONENTS,) if per.get(k) is not None}
        if not shares:
            continue
        top = sorted(shares.items(), key=lambda kv: -kv[1])
        slowest = sorted(s["per_request"].items(), key=lambda kv: -(kv[1]["p95_ms"] or 0))[:3]
        busiest = sorted(s["per_request"].items(), key=lambda kv: -kv[1]["count"])[:3]
        out.append(
            f"- {s['agents']} agents: server CPU per task {per['server_total']} s ("
            + ", ".join(f"{k} {v}" for k, v in top) + f"); {s['server_cpu_cores_busy']} cores "
            f"busy on average; most requests: "
            + ", ".join(f"`{k}` {v['per_second']}/s" for k, v in busiest)
            + "; slowest p95: " + ", ".join(f"`{k}` {v['p95_ms']} ms" for k, v in slowest)
            + f"; {sum(v for k, v in s['statuses'].items() if k != '2xx')} non-2xx; "
            f"task runs recorded {s['recorder_drain_seconds']} s after the last task ended."
        )  # fmt: skip
    healthy = [
        s
        for s in steps
        if s["counts"].get("tasks_completed", 0)
        >= 0.9 * max(1, s["counts"].get("tasks_started", 0))
        and s["task_wall_seconds_median"]
    ]
    if healthy:
        s = healthy[-1]
        api, total = s["cpu_seconds_per_task"]["api"], s["cpu_seconds_per_task"]["server_total"]
        out.append(
            f"- Capacity model from the {s['agents']}-agent step (tasks completed; a task lives "
            f"{task_seconds:g} s on an idle control plane): the API spends {api:g} CPU s per "
            f"task, so one API process (one core at most) keeps up with about "
            f"{task_seconds / api:.0f} concurrent agents, and 1000 agents need about "
            f"{1000 * api / task_seconds:.1f} cores of API and {1000 * total / task_seconds:.1f} "
            "cores of server in all (API, services, PostgreSQL, Redis)."
        )
    return out


def _nominal_task_seconds(args: argparse.Namespace) -> float:
    mean_running = (args.task_min_seconds + args.task_max_seconds) / 2
    return round(mean_running + args.dispatch_seconds + args.process_start_seconds, 1)


def _say(began: float, message: str) -> None:
    print(f"[{time.monotonic() - began:6.1f} s] {message}", file=sys.stderr, flush=True)


def _document(
    args: argparse.Namespace,
    stack: Stack,
    steps: list[dict[str, Any]],
    context: dict[str, Any],
    stopped: str | None,
) -> dict[str, Any]:
    cross = _load_report.crossing(steps, args.threshold_ms)
    return {
        "date": context["date"],
        "machine": context["machine"],
        "versions": stack.versions,
        "startup_seconds": stack.startup_seconds,
        "server_settings": stack.settings,
        "load_average_start": context["load_start"],
        "load_average_end": load_average(),
        "duration_minutes": round((time.monotonic() - context["began"]) / 60, 1),
        "parameters": {
            "agents": args.agent_steps,
            "generators": args.generators,
            "task_min_seconds": args.task_min_seconds,
            "task_max_seconds": args.task_max_seconds,
            "step_seconds": args.step_seconds,
            "stagger_seconds": args.stagger_seconds,
            "log_lines_per_minute": args.log_lines_per_minute,
            "log_batch_seconds": args.log_batch_seconds,
            "heartbeat_seconds": args.heartbeat_seconds,
            "dispatch_seconds": args.dispatch_seconds,
            "process_start_seconds": args.process_start_seconds,
            "threshold_ms": args.threshold_ms,
            "quick": args.quick,
            "seed": args.seed,
        },
        "note": args.note,
        "stopped_early": stopped,
        "pids": dict(stack.pids),
        "threshold_crossing": cross,
        "findings": _findings(steps, cross, args.threshold_ms, _nominal_task_seconds(args)),
        "simulated": SIMULATED,
        "steps": steps,
    }


def _write(args: argparse.Namespace, result: dict[str, Any]) -> tuple[Path, Path]:
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"control-plane-{result['date'][:10]}" + ("-quick" if args.quick else "")
    stem += f"-{args.label}" if args.label else ""
    json_path, md_path = args.out_dir / f"{stem}.json", args.out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    md_path.write_text(_load_report.markdown(result))
    return json_path, md_path


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every step; the results are written after each one, so a failure keeps the steps
    before it (``stopped_early`` says what ended the ramp)."""
    began = time.monotonic()
    context = {
        "began": began,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_start": load_average(),
    }
    _say(began, "starting PostgreSQL, Redis, the API and the services ...")
    stack = start_stack(bench_env(pyc=True), args.db_pool_size, args.db_max_overflow)
    work = Path(tempfile.mkdtemp(prefix="conductor-cp-gen-"))
    steps: list[dict[str, Any]] = []
    stopped: str | None = None
    try:
        _say(began, f"API {stack.api_url} (pids {stack.pids})")
        ids = _register(stack, max(args.agent_steps))
        for index, agents in enumerate(args.agent_steps, start=1):
            _say(began, f"step {index}: {agents} agents ...")
            try:
                step = _run_step(stack, args, ids, index, agents, work)
            except Exception as exc:
                stopped = f"step {index} ({agents} agents): {type(exc).__name__}: {exc}"[:600]
                _say(began, f"  stopped: {stopped}")
                break
            o = step["overall"]
            _say(began, f"  p50 {o['p50_ms']} ms, p95 {o['p95_ms']} ms, p99 {o['p99_ms']} ms, "
                  f"{o['per_second']} req/s, tasks {step['counts'].get('tasks_completed', 0)}/"
                  f"{step['counts'].get('tasks_started', 0)}, server CPU/task "
                  f"{step['cpu_seconds_per_task']['server_total']} s")  # fmt: skip
            steps.append(step)
            problems = _step_problems(step)
            for line in problems:
                _say(began, f"  {line}")
            if not step["counts"].get("tasks_completed"):
                stopped = f"step {index} ({agents} agents): no task completed"
                stopped = "; ".join([stopped, *problems[:2]])[:600]
                _say(began, f"  stopped: {stopped}")
                break
            if index < len(args.agent_steps):
                _write(args, _document(args, stack, steps, context, "still running"))
    finally:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C waits
        try:
            stack.stop()
            shutil.rmtree(work, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)
    return _document(args, stack, steps, context, stopped)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = run(args)
    except MissingBinary as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: everything started was stopped", file=sys.stderr)
        return 130
    json_path, md_path = _write(args, result)
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    if result["stopped_early"]:
        print(f"error: the ramp stopped early: {result['stopped_early']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
