"""Figures and the markdown summary of ``control_plane_load.py``: percentiles per request type
over a step's steady window, status and error counts, CPU per task, where p95 passes the
threshold."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

__all__ = ["crossing", "latency_table", "markdown", "merge_generators", "percentiles"]


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    """count, p50/p95/p99 (nearest rank) and max, in ms."""
    if not values:
        return {"count": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return round(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)], 1)

    return {"count": len(ordered), "p50_ms": rank(50), "p95_ms": rank(95), "p99_ms": rank(99),
            "max_ms": round(ordered[-1], 1)}  # fmt: skip


def merge_generators(outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """One step's generator outputs, merged: samples per label, counts, errors, CPU."""
    samples: dict[str, list[list[Any]]] = {}
    counts: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    walls: list[float] = []
    lags: list[float] = []
    for out in outputs:
        lags.extend(out["loop_lag_ms"])
        for label, rows in out["samples"].items():
            samples.setdefault(label, []).extend(rows)
        counts.update(out["counts"])
        errors.update(out["errors"])
        walls.extend(out["task_wall_seconds"])
    return {
        "samples": samples,
        "counts": dict(counts),
        "errors": dict(errors.most_common(20)),
        "task_wall_seconds": walls,
        "generator_cpu_seconds": round(sum(o["cpu_seconds"] for o in outputs), 1),
        "loop_lag": percentiles(lags),
    }


def _ok(label: str, status: str) -> bool:
    """2xx, or the 422 a Prefect client gets when it asks for a CSRF token and the server
    does not use them (every new client asks once: expected, not an error)."""
    return status.startswith("2") or (label == "GET /csrf-token" and status == "422")


def latency_table(
    samples: dict[str, list[list[Any]]], window: tuple[float, float]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, int]]:
    """Per label and overall figures for attempts that began inside ``window`` (wall clock),
    plus the count of every status over the whole step (``2xx`` folded)."""
    begin, end = window
    seconds = max(end - begin, 1e-9)
    per_label: dict[str, Any] = {}
    everything: list[float] = []
    statuses: Counter[str] = Counter()
    for label, rows in sorted(samples.items()):
        for _, _, status in rows:
            statuses["2xx" if _ok(label, status) else status] += 1
        inside = [ms for began, ms, _ in rows if begin <= began <= end]
        bad = sum(1 for began, _, s in rows if begin <= began <= end and not _ok(label, s))
        figures = percentiles(inside)
        figures["per_second"] = round(len(inside) / seconds, 2)
        figures["not_2xx"] = bad
        per_label[label] = figures
        everything.extend(inside)
    overall = percentiles(everything)
    overall["per_second"] = round(len(everything) / seconds, 1)
    return per_label, overall, dict(statuses)


def crossing(steps: list[dict[str, Any]], threshold_ms: float) -> dict[str, Any]:
    """Where the overall p95 first passes ``threshold_ms``: the step, the one before, and a
    linear estimate of the agent count in between."""
    previous = None
    for step in steps:
        p95 = step["overall"]["p95_ms"]
        if p95 is not None and p95 > threshold_ms:
            estimate = None
            if previous is not None and previous["overall"]["p95_ms"] is not None:
                a, pa = previous["agents"], previous["overall"]["p95_ms"]
                b, pb = step["agents"], p95
                estimate = round(a + (threshold_ms - pa) * (b - a) / (pb - pa)) if pb > pa else a
            return {"passed": True, "first_step_over": step["agents"], "p95_ms": p95,
                    "last_step_under": previous["agents"] if previous else None,
                    "estimated_agents": estimate}  # fmt: skip
        previous = step
    return {"passed": False, "highest_step_under": previous["agents"] if previous else None}


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:g}" if isinstance(value, float) else str(value)


def markdown(result: dict[str, Any]) -> str:
    m, p = result["machine"], result["parameters"]
    lines = [
        f"# Control-plane load: virtual Conductor agents against one Prefect API replica "
        f"({result['date'][:10]})",
        "",
        f"Measured {result['date']} by `benchmarks/control_plane_load.py` on {m['host']}: "
        f"{m['os']} (kernel {m['kernel']}), {m['cpus']} CPUs ({m['cpu_model']}), "
        f"{m['ram_gib']} GiB RAM, Python {m['python']}, Prefect {m['prefect']}, "
        f"{result['versions']['postgresql']}, {result['versions']['redis']}, "
        f"claude-conductor {m['claude_conductor']} at {m['git_commit']}. "
        f"The whole run took {result['duration_minutes']} min.",
        "",
        f"Load on the machine: load average {result['load_average_start']} at the start, "
        f"{result['load_average_end']} at the end; CPU used by processes outside this "
        "benchmark is given per step below. Start-up (seconds from the start: PostgreSQL "
        f"ready, Redis ready, migrated, API healthy): {result.get('startup_seconds')}.",
        "",
        f"Parameters: steps of {', '.join(str(s) for s in p['agents'])} concurrent agents in "
        f"{p['generators']} load-generator process(es); each agent runs tasks back to back, "
        f"each Running for {p['task_min_seconds']:g}-{p['task_max_seconds']:g} s; a step starts "
        f"agents over {p['stagger_seconds']:g} s, starts tasks for {p['step_seconds']:g} s and "
        f"lets the last ones finish; latencies are taken over the steady window (all agents "
        f"started, none stopping). Agent log lines: {p['log_lines_per_minute']:g}/min, sent "
        f"every {p['log_batch_seconds']:g} s; heartbeat every {p['heartbeat_seconds']:g} s. "
        f"Server settings: {result.get('server_settings')}.",
    ]
    if result.get("note"):
        lines += ["", result["note"]]
    if result.get("stopped_early"):
        lines += ["", f"**The ramp did not finish**: {result['stopped_early']}."]
    if result.get("analysis"):
        lines += ["", "## Findings", "", *result["analysis"]]
    lines += ["", "## Summary (computed)", "", *result["findings"], "", "## Steps", "",
              "| agents | tasks done / started | HTTP req/s | p50 ms | p95 ms | p99 ms | not 2xx "
              "| API CPU s/task | services | PostgreSQL | Redis | all server | generators "
              "| others' CPU s | recorder drain s |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- "
              "| --- | --- |"]  # fmt: skip
    for s in result["steps"]:
        c, o, per = s["counts"], s["overall"], s["cpu_seconds_per_task"]
        bad = sum(v for k, v in s["statuses"].items() if k != "2xx")
        lines.append(
            f"| {s['agents']} | {c.get('tasks_completed', 0)} / {c.get('tasks_started', 0)} | "
            f"{_fmt(o['per_second'])} | {_fmt(o['p50_ms'])} | {_fmt(o['p95_ms'])} | "
            f"{_fmt(o['p99_ms'])} | {bad} | {_fmt(per.get('api'))} | {_fmt(per.get('services'))} "
            f"| {_fmt(per.get('postgres'))} | {_fmt(per.get('redis'))} | "
            f"{_fmt(per.get('server_total'))} | {_fmt(per.get('generators'))} | "
            f"{_fmt(s['other_processes_cpu_seconds'])} | {_fmt(s['recorder_drain_seconds'])} |"
        )
    for s in result["steps"]:
        lines += ["", f"### {s['agents']} agents: per request type (steady window, "
                      f"{s['steady_seconds']:g} s)", "",
                  "| request | count | /s | p50 ms | p95 ms | p99 ms | max ms | not 2xx |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        rows = [kv for kv in s["per_request"].items() if kv[1]["count"]]
        for label, f in sorted(rows, key=lambda kv: -kv[1]["count"]):
            lines.append(f"| `{label}` | {f['count']} | {_fmt(f['per_second'])} | "
                         f"{_fmt(f['p50_ms'])} | {_fmt(f['p95_ms'])} | {_fmt(f['p99_ms'])} | "
                         f"{_fmt(f['max_ms'])} | {f['not_2xx']} |")  # fmt: skip
        extra = [f"statuses over the whole step: {s['statuses']}",
                 f"events sent {s['counts'].get('events_sent', 0)}, failed "
                 f"{s['counts'].get('events_failed', 0)}",
                 f"flow runs Completed per the API: {s['flow_runs_completed']}; task runs "
                 f"recorded: {s['task_runs_recorded']}",
                 f"server RSS mid-step (MiB): {s['rss_mib']}",
                 f"load generators' event-loop lag (ms, a 100 ms sleep's overshoot; it is "
                 f"part of every latency above): {s['generator_loop_lag']}",
                 f"CPU seconds over the step: {s['cpu_seconds']}"]  # fmt: skip
        if s["errors"]:
            extra.append(f"errors seen by the agents: {s['errors']}")
        for name, found in (s.get("server_errors") or {}).items():
            if found:
                extra.append(f"exceptions in the {name} log: {found}")
        lines += ["", *[f"- {x}" for x in extra]]
    lines += ["", "## What was simulated and what was not", "", *result["simulated"], ""]
    return "\n".join(lines)
