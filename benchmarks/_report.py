"""The markdown summary of a ``standalone_compare.py`` result."""

from __future__ import annotations

from typing import Any

from _runs import PHASES

__all__ = ["markdown"]

_ROWS: tuple[tuple[str, str, str], ...] = (
    ("(a) submit -> work starts", "submit_to_work_seconds", "s"),
    ("(a) submit -> Running (API state)", "submit_to_running_seconds", "s"),
    ("(a) submit -> final state", "submit_to_final_seconds", "s"),
    ("(b) throughput, {tasks} tasks on {agents} slots", "burst_tasks_per_second", "tasks/s"),
    ("(b) wall time, {tasks} tasks on {agents} slots", "burst_wall_seconds", "s"),
    ("(b) machine CPU per task during (b)", "burst_machine_cpu_seconds_per_task", "CPU s"),
    ("(b) one submission during the burst, p50", "burst_one_submission_p50_seconds", "s"),
    ("(b) one submission during the burst, max", "burst_one_submission_max_seconds", "s"),
    ("(c) idle memory, VmRSS sum", "idle_memory_rss_mib", "MiB"),
    ("(c) idle memory, PSS sum", "idle_memory_pss_mib", "MiB"),
    ("(c) idle memory with dashboard, VmRSS sum", "idle_memory_dashboard_rss_mib", "MiB"),
    ("(c) idle memory with dashboard, PSS sum", "idle_memory_dashboard_pss_mib", "MiB"),
    ("(d) up to ready, cold (fresh home)", "up_cold_seconds", "s"),
    ("(d) up to ready, warm", "up_warm_seconds", "s"),
    ("(d) up to ready, warm, with dashboard", "up_warm_dashboard_seconds", "s"),
    ("down (everything stopped)", "down_seconds", "s"),
)


def _cell(figure: dict[str, Any] | None) -> str:
    if not figure or figure.get("median") is None:
        return "n/a"
    p95 = f" (p95 {figure['p95']:g})" if figure.get("p95") is not None else ""
    return f"{figure['min']:g} / **{figure['median']:g}** / {figure['max']:g}{p95}"


def _median(figure: dict[str, Any] | None) -> str:
    return "n/a" if not figure or figure.get("median") is None else f"{figure['median']:g}"


def markdown(result: dict[str, Any]) -> str:
    m, p = result["machine"], result["parameters"]
    c, s, ratios = result["conductor"], result["stock"], result["ratios_conductor_over_stock"]
    lines = [
        f"# Standalone tier vs stock Prefect ({result['date'][:10]})",
        "",
        f"Measured {result['date']} by `benchmarks/standalone_compare.py` on {m['host']}: "
        f"{m['os']} (kernel {m['kernel']}), {m['cpus']} CPUs ({m['cpu_model']}), "
        f"{m['ram_gib']} GiB RAM, Python {m['python']}, Prefect {m['prefect']}, "
        f"claude-conductor {m['claude_conductor']} at {m['git_commit']}.",
        f"Load average at start {result['load_average_start']}, at end "
        f"{result['load_average_end']}; the whole run took {result['duration_minutes']} min.",
        "",
        f"Parameters: {p['runs']} latency runs and start-up rounds, {p['rounds']} throughput "
        f"round(s) of {p['tasks']} tasks on {p['agents']} slots, memory read "
        f"{p['idle_seconds']:g} s after ready. Conductor polls every "
        f"{p['conductor_query_seconds']:g} s (its default), stock every "
        f"{p['stock_query_seconds']:g} s (Prefect's default). Bytecode: {p['bytecode']}"
        + (
            f" (compileall took {p['compileall_seconds']} s)." if "compileall_seconds" in p else "."
        ),
    ]
    if result.get("note"):
        lines += ["", result["note"]]
    lines += [
        "",
        "min / **median** / max; ratio = Conductor median / stock median.",
        "",
        "| measure | Conductor | stock Prefect | ratio |",
        "| --- | --- | --- | --- |",
    ]
    for label, key, unit in _ROWS:
        if key not in c and key not in s:
            continue
        name = label.format(tasks=p["tasks"], agents=p["agents"])
        ratio = ratios.get(key)
        lines.append(
            f"| {name} ({unit}) | {_cell(c.get(key))} | {_cell(s.get(key))} | "
            f"{'' if ratio is None else f'{ratio:g}x'} |"
        )
    if "database_locked_errors" in c or "database_locked_errors" in s:
        lines += [
            "",
            '"database is locked" errors in the server log during (a) and (b): Conductor '
            f"{c.get('database_locked_errors', 'n/a')}, stock {s.get('database_locked_errors', 'n/a')}.",
        ]
    lines += [
        "",
        "## Where the time goes between submit and work (medians of (a), seconds)",
        "",
        "| phase | Conductor | stock Prefect |",
        "| --- | --- | --- |",
    ]
    for key, label in PHASES:
        lines.append(f"| {label} | {_median(c.get(key + '_seconds'))} | "
                     f"{_median(s.get(key + '_seconds'))} |")  # fmt: skip
    task_keys = sorted(k for k in c if k.startswith("task_run_"))
    if task_keys:
        lines += [
            "",
            "Conductor's flow runs four Prefect tasks (medians of (a), seconds): "
            + ", ".join(
                f"{k.removeprefix('task_run_').removesuffix('_seconds')} {_median(c[k])}"
                for k in task_keys
            )
            + ".",
        ]
    if "up_cold_detail_server_ready_seconds" in s:
        lines += [
            "",
            "Stock start-up split (medians, s): cold server healthy "
            f"{_median(s['up_cold_detail_server_ready_seconds'])} + worker heartbeat "
            f"{_median(s['up_cold_detail_worker_ready_seconds'])}; warm "
            f"{_median(s.get('up_warm_detail_server_ready_seconds'))} + "
            f"{_median(s.get('up_warm_detail_worker_ready_seconds'))}.",
        ]
    lines += ["", "## Idle memory by process tree (median sample, VmRSS / PSS MiB)", ""]
    raw = result["raw"]
    for side, key in (
        ("Conductor", ("conductor", "idle_memory")),
        ("Conductor with dashboard", ("conductor", "idle_memory_dashboard")),
        ("stock Prefect", ("stock", "idle_memory")),
    ):
        samples = sorted(raw[key[0]].get(key[1]) or [], key=lambda m: m["rss_mib"])
        if samples:
            sample = samples[len(samples) // 2]
            trees = ", ".join(
                f"{name} {t['rss_mib']:g} / {t['pss_mib']:g}"
                + (f" ({t['processes']:g} processes)" if t["processes"] > 1 else "")
                for name, t in sample["by_root"].items()
            )
            lines.append(f"- {side}: {trees}")
    bursts = {k: raw[k].get("burst") for k in ("conductor", "stock")}
    if any(bursts.values()):
        lines += ["", "Throughput rounds:", ""]
        for side, rounds in bursts.items():
            for b in rounds or []:
                lines.append(
                    f"- {side}: {b['completed']}/{b['tasks']} completed in {b['wall_seconds']} s "
                    f"({b['tasks_per_second']} tasks/s; all submitted in {b['submit_seconds']} s, "
                    f"first work started after {b['first_work_start_seconds']} s; machine CPU "
                    f"{b.get('machine_cpu_seconds_per_task')} s per task)"
                )
    lines += ["", _HOW, ""]
    return "\n".join(lines)


_HOW = """## How it was measured

- Conductor: `claude_conductor.tiers.standalone.up` with a temporary home, free loopback ports,
  the tier's defaults otherwise (two process workers, poll 1 s). Tasks are `kind: command`
  submitted with `claude_conductor.client.tasks.submit_task`; the command
  `date +%s.%N >> FILE` (FILE outside the repository) marks when the work starts.
- Stock: `prefect server start` (SQLite, its own `PREFECT_HOME`) and
  `prefect worker start --pool bench-stock --type process` with no other option (the worker
  creates the pool; poll 10 s). Analytics off (`DO_NOT_TRACK=1`) to keep it on loopback. A
  trivial async flow (`Flow.from_source(dir, ...).deploy()`) appends `time.time()` to FILE.
  For (b) the pool's concurrency limit is set to the number of slots.
- (a): runs one at a time, each after a random pause of up to one poll interval (seeded), so
  submissions land at random points of the polling cycle; phases from the run's state history.
- (b): all runs submitted back to back; wall time from the first submission to the last final
  state's server timestamp.
- (c): VmRSS (and PSS, shared pages counted once) from `/proc/<pid>/status` and
  `/proc/<pid>/smaps_rollup`, summed over every process tree the start-up created.
- (d): Conductor: the `up` call until it returns (server healthy, pools and queues, 3
  deployments registered, both workers heartbeating). Stock: server start until `/api/health`
  answers, then worker start until its first heartbeat (no deployment is registered).
- Each start-up round uses a new home (cold), then `down` and `up` again on it (warm)."""
