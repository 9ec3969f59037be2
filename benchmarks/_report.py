"""The markdown summary of a ``standalone_compare.py`` result: issue 10's goals table with
Conductor, stock Prefect at its defaults and stock Prefect tuned side by side."""

from __future__ import annotations

from typing import Any

__all__ = ["markdown"]

SIDES = (("conductor", "Conductor"), ("stock", "stock (default)"), ("stock_tuned", "stock (tuned)"))


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{value:g}"


def _p50_p95(figure: dict[str, Any] | None) -> str:
    if not figure or figure.get("median") is None:
        return "n/a"
    return f"{_num(figure['median'])} / {_num(figure['p95'])}"


def _p50_max(figure: dict[str, Any] | None) -> str:
    if not figure or figure.get("median") is None:
        return "n/a"
    return f"{_num(figure['median'])} / {_num(figure['max'])}"


def _median(figure: dict[str, Any] | None) -> str:
    if not figure or figure.get("median") is None:
        return "n/a"
    return _num(figure["median"])


def _rows(result: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    p = result["parameters"]
    rows: list[tuple[str, str, list[str]]] = []

    def row(label: str, goal: str, cell: Any) -> None:
        rows.append((label, goal, [cell(result.get(side) or {}) for side, _ in SIDES]))

    row("submit -> command spawned, p50 / p95 (s)", "<= 0.15 / <= 0.4",
        lambda f: _p50_p95(f.get("submit_to_work_seconds")))  # fmt: skip
    for size in p["backlog"]:
        row(f"{size} trivial tasks on {p['agents']} slots, pre-created backlog (tasks/s)",
            ">= 10", lambda f, n=size: _median(f.get(f"backlog_{n}_tasks_per_second")))  # fmt: skip
    row(f"one submission during a {p['tasks']}-task burst, p50 / max (s)", "<= 0.05 / <= 1",
        lambda f: f"{_median(f.get('burst_one_submission_p50_seconds'))} / "
        f"{_median(f.get('burst_one_submission_max_seconds'))}")  # fmt: skip
    row(f"refused among {p['concurrent']} concurrent run_deployment calls", "0",
        lambda f: _num(f.get("concurrent_refused")))  # fmt: skip
    row(f"`conductor status` while {p['flood']} tasks flood 2 slots, p50 / p95 (s)", "p95 <= 1",
        lambda f: _p50_p95(f.get("status_flood_command_seconds")))  # fmt: skip
    row("... the same status read in-process, p50 / p95 (s)", "",
        lambda f: _p50_p95(f.get("status_flood_in_process_seconds")))  # fmt: skip
    row('"database is locked" errors in the server log (whole series)', "0",
        lambda f: _num(f.get("database_locked_errors")))  # fmt: skip
    row("idle memory, server + worker(s), RSS / PSS (MiB)", "<= 450",
        lambda f: f"{_median(f.get('idle_memory_rss_mib'))} / "
        f"{_median(f.get('idle_memory_pss_mib'))}")  # fmt: skip
    row("memory per running agent beyond the agent, USS / PSS (MiB)", "<= 30",
        lambda f: f"{_median(f.get('running_memory_per_run_uss_mib'))} / "
        f"{_median(f.get('running_memory_per_run_pss_mib'))}")  # fmt: skip
    row("up to ready, warm (s)", "<= 5", lambda f: _median(f.get("up_warm_seconds")))
    row("up to ready, cold (s)", "", lambda f: _median(f.get("up_cold_seconds")))
    return rows


def markdown(result: dict[str, Any]) -> str:
    m, p = result["machine"], result["parameters"]
    lines = [
        f"# Standalone tier vs stock Prefect ({result['date'][:10]})"
        + (" - quick" if p.get("quick") else ""),
        "",
        f"Measured {result['date']} by `benchmarks/standalone_compare.py"
        + (" --quick" if p.get("quick") else "")
        + f"` on {m['host']}: {m['os']} (kernel {m['kernel']}), {m['cpus']} CPUs "
        f"({m['cpu_model']}), {m['ram_gib']} GiB RAM, Python {m['python']}, Prefect "
        f"{m['prefect']}, claude-conductor {m['claude_conductor']} at {m['git_commit']}.",
        f"Load average (1, 5, 15 min) at start {result['load_average_start']}, during "
        f"{result.get('load_average_samples')}, at end {result['load_average_end']}; the run "
        f"took {result['duration_minutes']} min.",
        "",
        f"Conductor polls every {p['conductor_query_seconds']:g} s when no event wakes it; "
        f"stock every {p['stock_query_seconds']:g} s (Prefect's default) and "
        f"{p['stock_tuned_query_seconds']:g} s (tuned). {p['runs']} latency runs, "
        f"{p['startup_rounds']} start-up round(s), memory read {p['idle_seconds']:g} s after "
        f"ready. Bytecode: {p['bytecode']}.",
    ]
    if result.get("note"):
        lines += ["", result["note"]]
    for error in result.get("errors") or []:
        lines += ["", f"**Phase failed**, its rows are missing: {error}"]
    lines += [
        "",
        "| measure (issue 10) | goal | " + " | ".join(name for _, name in SIDES) + " |",
        "| --- | --- | " + " | ".join("---" for _ in SIDES) + " |",
    ]
    for label, goal, cells in _rows(result):
        lines.append(f"| {label} | {goal} | " + " | ".join(cells) + " |")
    c = result.get("conductor") or {}
    lines += ["", "## Where the time goes", ""]
    lines += ["Submit -> work (medians of the latency runs, s):", ""]
    lines += ["| phase | " + " | ".join(n for _, n in SIDES) + " |",
              "| --- | " + " | ".join("---" for _ in SIDES) + " |"]  # fmt: skip
    for key, label in (
        ("submit_to_pending", "submit -> Pending (the worker took it)"),
        ("pending_to_running", "Pending -> Running (process started, engine set up)"),
        ("running_to_work", "Running -> work starts"),
        ("work_to_final", "work starts -> final state"),
    ):
        cells = [_median((result.get(s) or {}).get(key + "_seconds")) for s, _ in SIDES]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for key, label in (("up_warm_steps", "warm"), ("up_cold_steps", "cold")):
        steps = c.get(key)
        if steps:
            parts = ", ".join(f"{name} {seconds:g} s" for name, seconds in steps.items())
            lines += ["", f"`conductor up` {label}, by step (medians): {parts}."]
    s = result.get("stock") or {}
    if "up_warm_detail_server_ready_seconds" in s:
        lines += [
            "",
            "Stock start-up (medians, s): server healthy "
            f"{_median(s.get('up_warm_detail_server_ready_seconds'))} + worker heartbeat "
            f"{_median(s.get('up_warm_detail_worker_ready_seconds'))} warm; "
            f"{_median(s.get('up_cold_detail_server_ready_seconds'))} + "
            f"{_median(s.get('up_cold_detail_worker_ready_seconds'))} cold.",
        ]
    lines += ["", "## Memory by process (median start-up round, RSS / PSS / USS MiB)", ""]
    raw = result["raw"]
    for side, name in (("conductor", "Conductor"), ("stock", "stock")):
        samples = sorted(raw[side].get("idle_memory") or [], key=lambda x: x["rss_mib"])
        if samples:
            sample = samples[len(samples) // 2]
            procs = ", ".join(
                f"{proc['name']} ({proc['root']}) {proc['rss_mib']:g} / {proc['pss_mib']:g} / "
                f"{proc['uss_mib']:g}"
                for proc in sample["processes"]
            )
            lines.append(f"- {name}, idle: {procs}")
    held = (raw["conductor"].get("running_memory") or {}).get("runs") or []
    if held:
        one = held[len(held) // 2]
        lines.append(
            f"- Conductor, per running run: engine {one['engine']['rss_mib']:g} / "
            f"{one['engine']['pss_mib']:g} / {one['engine']['uss_mib']:g}, supervisor "
            f"{one['supervisor']['rss_mib']:g} / {one['supervisor']['pss_mib']:g} / "
            f"{one['supervisor']['uss_mib']:g} (the task's own command not counted)"
        )
    stock_held = raw["stock"].get("running_memory") or {}
    if stock_held.get("runs"):
        one = stock_held["runs"][0]
        lines.append(
            f"- stock, per running run ({stock_held.get('processes')} processes under the "
            f"worker for {len(stock_held['runs'])} runs): {one['rss_mib']:g} / "
            f"{one['pss_mib']:g} / {one['uss_mib']:g}"
        )
    for side, name in SIDES:
        for b in raw[side].get("backlog") or []:
            lines.append(
                f"- {name}: backlog of {b['tasks']}: {b['completed']} completed in "
                f"{b['wall_seconds']} s, first work after {b['first_work_start_seconds']} s, "
                f"machine CPU {b['machine_cpu_seconds_per_task']} s per task"
            )
        conc = raw[side].get("concurrent")
        if conc:
            lines.append(
                f"- {name}: {conc['calls']} created at once: answers {conc['status_codes']}, "
                f"slowest {conc['one_call_max_seconds']} s"
            )
    lines += ["", _HOW, ""]
    return "\n".join(lines)


_HOW = """## How it was measured

- Conductor: `claude_conductor.tiers.standalone.up` with a temporary home and free loopback
  ports, the tier's defaults otherwise (one conductor worker for both pools). Tasks are
  `kind: command` on a one-commit repository, submitted with `submit_task`; the command
  `date +%s.%N >> FILE` marks when the work starts (the whole per-task path runs: workspace,
  command, result).
- Stock: `prefect server start` (SQLite, its own `PREFECT_HOME`) and `prefect worker start
  --type process` (tuned: `PREFECT_WORKER_QUERY_SECONDS` lowered), a trivial async flow
  deployed with `Flow.from_source(dir, ...).deploy()` appends `time.time()` to FILE.
- Backlog: the pool is paused, the runs are created, the pool is resumed; wall time from the
  resume to the last final state's server timestamp.
- Concurrent calls: raw `POST /deployments/{id}/create_flow_run`, all in flight at once, no
  client retry; any answer but 2xx counts as refused.
- `conductor status`: `python -m claude_conductor.cli.main status --json` (a new process, as a
  user types it), and `standalone.status` in-process, alternately while the flood runs.
- Memory: psutil `memory_full_info` (RSS; PSS, shared pages split between their sharers;
  USS, the process's own pages). Per running run: Conductor's engine and supervisor of each
  run while its command (`sleep`, standing for `claude`) runs; stock: every process under
  the worker divided by the runs held.
- "database is locked": occurrences in each server's log over the whole series."""
