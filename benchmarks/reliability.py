"""Fault and flood scenarios on a real standalone stack (Prefect server on SQLite, Conductor's
worker with its forkserver, the real `claude` against the scripted local model), each recorded
as: outcome, time to recover, work lost, orphans.

    .venv/bin/python benchmarks/reliability.py [--flood 40] [--agents 2] [--out FILE.md]
        [--skip kill|server|worker|flood|down|bad]

Scenarios: `claude` SIGKILLed with `retries: 1` and with `retries: 0`; the Prefect server
stopped and started again while a task runs; the agents' worker SIGKILLed while two tasks run
(then `up`); 40 tasks submitted at once onto 2 agent slots; `conductor down` while a task runs
(and `up` again); bad inputs through `conductor run --local` (exit code, seconds, peak memory,
worktrees and branches created). Work lost counts finished agent work without a result (or a
successful task without its commit); orphans count processes of the stack (flow runs, agents)
still alive once every run is final. Tasks are found by id (`client.tasks.find_run`, the
`task:<id>` tag), never by run name. Writes `results/reliability-<date>.md` and prints the
table. About 10 minutes on 2 cores."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from _common import RESULTS, free_port, load_average, machine, make_repo

from claude_conductor.api.fields import task_from_fields
from claude_conductor.client.connection import conductor_client
from claude_conductor.client.tasks import find_run, submit_task, task_result, wait_for_run
from claude_conductor.demo.script_steps import Request, Step, stall, text, tool_use
from claude_conductor.demo.scripted_model import ScriptedModel
from claude_conductor.settings import ConductorSettings, ServerSettings, WorkerSettings
from claude_conductor.system import processes
from claude_conductor.tiers import standalone
from claude_conductor.tiers.standalone import launch, teardown

_UP_TIMEOUT_SECONDS = 420.0
_BAD_INPUT_TIMEOUT_SECONDS = 120.0


@dataclass
class Row:
    scenario: str
    outcome: str
    recover_seconds: float | None
    work_lost: int
    orphans: int
    note: str = ""


class Bench:
    def __init__(self, root: Path, model: ScriptedModel, agents: int) -> None:
        self.root = root
        self.model = model
        self.repo = make_repo(root)
        self.settings = ConductorSettings(
            home=root / "home",
            server=ServerSettings(host="127.0.0.1", port=free_port()),
            worker=WorkerSettings(agents=agents, query_seconds=0.5),
            dashboard={"enabled": False},
        )
        clean = {
            k: v for k, v in os.environ.items() if not k.startswith(("CONDUCTOR_", "PREFECT_"))
        }
        agent_home = root / "agent-home"
        agent_home.mkdir()
        self.env = {
            **clean,
            "ANTHROPIC_BASE_URL": model.url,
            "ANTHROPIC_API_KEY": "sk-reliability-bench-0123456789",
            "CLAUDE_CODE_MAX_RETRIES": "0",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "HOME": str(agent_home),
            "CONDUCTOR_HOME": str(self.settings.home),
            "CONDUCTOR_SERVER__PORT": str(self.settings.server.port),
            "CONDUCTOR_WORKER__QUERY_SECONDS": "0.5",
            "CONDUCTOR_WORKER__AGENTS": str(agents),
            "CONDUCTOR_DASHBOARD__ENABLED": "false",
            "CONDUCTOR_AGENT__RESULT_GRACE_SECONDS": "1",
            "CONDUCTOR_AGENT__KILL_GRACE_SECONDS": "1",
        }

    # -- plumbing ---------------------------------------------------------------------------

    def up(self) -> float:
        began = time.monotonic()
        standalone.up(self.settings, base_env=self.env, timeout_seconds=_UP_TIMEOUT_SECONDS)
        return time.monotonic() - began

    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "claude_conductor.cli.main", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def submit(self, *args: str) -> str:
        """``conductor run ARGS --repo REPO`` (or ``conductor run FILE``); the task id."""
        repo = [] if args and args[0].endswith(".yaml") else ["--repo", str(self.repo)]
        out = self.cli("run", *args, *repo)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        line = next(x for x in out.stderr.splitlines() if x.startswith("submitted "))
        return line.split()[1]

    def show(self, task_id: str, wait: bool = False) -> dict[str, Any]:
        out = self.cli("tasks", "show", task_id, "--json", *(["--wait"] if wait else []))
        doc: dict[str, Any] = json.loads(out.stdout) if out.stdout.strip() else {}
        return doc

    def final(self, task_id: str) -> dict[str, Any]:
        """The task once its run is final, as `tasks show --json` prints it; waited for in
        this process (polling every 0.5 s), so the time measured is not a CLI's start-up."""

        async def go() -> dict[str, Any]:
            async with conductor_client(self.settings) as client:
                run = await find_run(client, task_id)
                final = await wait_for_run(client, run.id, poll_seconds=0.5)
                result = await task_result(client, final)
            return {
                "state": final.state.name if final.state else None,
                "result": result.model_dump(mode="json") if result else None,
            }

        return asyncio.run(go())

    def _claude_processes(self) -> dict[int, str]:
        """Live `claude` processes working in this stack's workspaces: PID -> cwd. Scanned in
        /proc: the agent's environment is built from scratch, so it carries no stack marker."""
        root = str(self.settings.workspaces_dir.resolve()) + "/"
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                exe = (entry / "cmdline").read_bytes().split(b"\0")[0]
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            if (
                exe.endswith(b"claude")
                and cwd.startswith(root)
                and processes.is_live(int(entry.name))
            ):
                found[int(entry.name)] = cwd
        return found

    def claude_pids(self, task_id: str) -> list[int]:
        return [p for p, cwd in self._claude_processes().items() if cwd.endswith(f"/{task_id}")]

    def orphans(self, extra: Sequence[int] = (), settle_seconds: float = 15.0) -> int:
        """Flow-run processes of the stack, agents and ``extra`` PIDs still alive once every
        run is final (each gets ``settle_seconds`` to exit after reporting its final state)."""
        deadline = time.monotonic() + settle_seconds
        while True:
            pids = {pid for pid, _ in teardown.flow_run_processes(self.settings)}
            pids |= {pid for pid in extra if processes.is_live(pid)}
            left = pids | set(self._claude_processes())
            if not left or time.monotonic() > deadline:
                return len(left)
            time.sleep(0.5)

    def lost(self, docs: list[dict[str, Any]], kept: str | None = None) -> int:
        """Tasks whose agent finished without the result reaching Prefect, or that succeeded
        without their commit on the branch (and, with ``kept``, without that file in it)."""
        lost = 0
        for doc in docs:
            result = doc.get("result")
            if not result:
                lost += 1
                continue
            if result["status"] == "succeeded" and result.get("files_changed"):
                ref = result["head_commit"] + (f":{kept}" if kept else "")
                show = subprocess.run(
                    ["git", "-C", str(self.repo), "cat-file", "-e", ref],
                    capture_output=True,
                    check=False,
                )
                lost += show.returncode != 0
            elif result["status"] == "succeeded" and kept:
                lost += 1  # the agent wrote `kept`: a success without it lost the work
        return lost


def _wait_for(predicate: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError


# -- scenarios ------------------------------------------------------------------------------


def kill_claude(bench: Bench, retries: int) -> Row:
    calls = {"n": 0}

    def first_hangs(request: Request) -> Step:
        calls["n"] += 1
        return stall(600) if calls["n"] == 1 else text("Recovered.")

    marker = bench.model.add_script(f"kill-{retries}", [first_hangs])
    spec = bench.root / f"kill-{retries}.yaml"
    spec.write_text(f"prompt: kill {marker}\nrepo: {bench.repo}\nretries: {retries}\n")
    task_id = bench.submit(str(spec))
    (pid,) = _wait_for(lambda: bench.claude_pids(task_id), 180)
    _wait_for(lambda: calls["n"] >= 1, 60)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    doc = bench.final(task_id)
    recover = time.monotonic() - killed
    result = doc.get("result") or {}
    outcome = f"{doc.get('state')}: {result.get('status')}"
    if retries == 0:
        outcome += f" ({(result.get('error') or '')[:110]})"
    else:
        outcome += f" after {calls['n']} agent runs"
    return Row(
        f"SIGKILL `claude` mid-task, retries: {retries}",
        outcome,
        recover,
        bench.lost([doc]),
        bench.orphans(),
        "time from the kill to the final state",
    )


def restart_server(bench: Bench) -> Row:
    marker = bench.model.add_script(
        "server-restart",
        [
            tool_use("Bash", {"command": "sleep 8"}),
            lambda req: tool_use("Write", {"file_path": "after.txt", "content": "after\n"}),
            text("Finished across the restart."),
        ],
    )
    task_id = bench.submit("--prompt", f"restart {marker}")
    _wait_for(lambda: bench.claude_pids(task_id), 180)
    time.sleep(2)
    stopped = time.monotonic()
    processes.stop_daemon(bench.settings, launch.SERVER, grace_seconds=10)
    bench.up()
    healthy = time.monotonic() - stopped
    doc = bench.final(task_id)
    result = doc.get("result") or {}
    return Row(
        "Prefect server stopped and started again mid-run",
        f"{doc.get('state')}: {result.get('status')}",
        healthy,
        bench.lost([doc], kept="after.txt"),
        bench.orphans(),
        "time from the stop to a healthy stack again; the run went on meanwhile",
    )


def worker_crash(bench: Bench) -> Row:
    """SIGKILL the agents' worker while two tasks run (issue 12, defect 1): the runs must
    finish with their commits and results, leave no process behind, and the next `up` must
    run nothing twice."""
    arrived = [0]
    met = threading.Condition()
    gate = threading.Event()

    def wait_at_the_gate(request: Request) -> Step:
        with met:
            arrived[0] += 1
            met.notify_all()
        gate.wait(300)
        return tool_use("Write", {"file_path": "kept.txt", "content": "kept\n"})

    marker = bench.model.add_script(
        "worker-crash", [wait_at_the_gate, text("Finished after the worker died.")]
    )
    ids = [bench.submit("--prompt", f"worker crash {n} {marker}") for n in range(2)]
    _wait_for(lambda: arrived[0] >= 2, 240)
    worker = processes.read_daemon(bench.settings, launch.WORKER)
    if worker is None or not worker.alive:
        raise RuntimeError("the agents' worker is not running")
    descendants = [p.pid for p in psutil.Process(worker.pid).children(recursive=True)]
    os.kill(worker.pid, signal.SIGKILL)
    killed = time.monotonic()
    _wait_for(lambda: not processes.pid_alive(worker.pid), 10)
    gate.set()  # the agents finish only now, with no worker left
    docs = [bench.final(t) for t in ids]
    recover = time.monotonic() - killed
    orphans = bench.orphans(extra=descendants)
    up_seconds = bench.up()
    again = [bench.show(t) for t in ids]
    runs_twice = sum(d.get("state") != "Completed" for d in again)
    states = ", ".join(f"{d.get('state')}: {(d.get('result') or {}).get('status')}" for d in docs)
    return Row(
        "agents' worker SIGKILLed while 2 tasks run, then `up`",
        f"{states}; after `up`: {len(again) - runs_twice}/{len(again)} still Completed",
        recover,
        bench.lost(docs, kept="kept.txt"),
        orphans,
        f"time from the kill to both runs final (no worker alive); `up` after it "
        f"{up_seconds:.1f}s; {len(descendants)} processes of the dead worker checked",
    )


def flood(bench: Bench, count: int) -> Row:
    """``count`` tasks submitted at the same instant (one client, ``asyncio.gather``)."""
    marker = bench.model.add_script(
        "flood",
        [tool_use("Write", {"file_path": "f.txt", "content": "f\n"}), text("Flood done.")],
    )
    specs = [
        task_from_fields("reliability", {"prompt": f"flood {n} {marker}", "repo": str(bench.repo)})
        for n in range(count)
    ]

    async def go() -> tuple[float, list[dict[str, Any]]]:
        async with conductor_client(bench.settings) as client:
            runs = await asyncio.gather(*(submit_task(client, spec) for spec in specs))
            submitted = time.monotonic() - began
            docs = []
            for run in runs:  # they end roughly in order: wait for each in turn
                final = await wait_for_run(client, run.id, poll_seconds=1.0)
                result = await task_result(client, final)
                docs.append(
                    {
                        "state": final.state.name if final.state else None,
                        "result": result.model_dump(mode="json") if result else None,
                    }
                )
            return submitted, docs

    began = time.monotonic()
    submitted, docs = asyncio.run(go())
    total = time.monotonic() - began
    results = [d.get("result") or {} for d in docs]
    ok = sum(r.get("status") == "succeeded" for r in results)
    spans = sorted(
        [(datetime.fromisoformat(r["started_at"]), 1) for r in results if r.get("started_at")]
        + [(datetime.fromisoformat(r["finished_at"]), -1) for r in results if r.get("finished_at")]
    )
    running = peak = 0
    for _, delta in spans:
        running += delta
        peak = max(peak, running)
    slots = bench.settings.worker.agents
    return Row(
        f"{count} tasks flooded onto {slots} agent slots",
        f"{ok}/{count} succeeded, peak {peak} at once (limit {slots})",
        total,
        bench.lost(docs, kept="f.txt"),
        bench.orphans(),
        f"all {count} submitted at once, accepted in {submitted:.1f}s; "
        "time until the last one ended",
    )


def down_while_running(bench: Bench) -> Row:
    marker = bench.model.add_script(
        "down", [tool_use("Write", {"file_path": "partial.txt", "content": "half\n"}), stall(600)]
    )
    task_id = bench.submit("--prompt", f"down {marker}")
    pids = _wait_for(lambda: bench.claude_pids(task_id), 180)
    _wait_for(lambda: (bench.settings.workspaces_dir / task_id / "partial.txt").exists(), 60)
    began = time.monotonic()
    out = bench.cli("down")
    down_seconds = time.monotonic() - began
    left = sum(processes.pid_alive(p) for p in pids) + len(
        processes.find_processes_with_env(launch.STACK_MARKER, str(bench.settings.home))
    )
    up_seconds = bench.up()
    doc = bench.show(task_id)
    result = doc.get("result") or {}
    kept = subprocess.run(
        ["git", "-C", str(bench.repo), "cat-file", "-e", f"conductor/{task_id}:partial.txt"],
        capture_output=True,
        check=False,
    )
    error = (result.get("error") or "")[:110]
    return Row(
        "`conductor down` while a task runs, then `up`",
        f"{doc.get('state')}: {error}...; partial work on the branch: "
        f"{'yes' if kept.returncode == 0 else 'no'}",
        down_seconds + up_seconds,
        0 if kept.returncode == 0 else 1,
        left,
        f"down {down_seconds:.1f}s (exit {out.returncode}) + up {up_seconds:.1f}s",
    )


_BOMB = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]"
        for i in range(9)
    ]
    + ["prompt: *j"]
)
_BAD_INPUTS: list[tuple[str, str | bytes]] = [
    ("NUL byte in the prompt", 'prompt: "a\\0b"\n'),
    ("YAML anchor bomb", _BOMB),
    ("20,000 nested `[`", "prompt: " + "[" * 20000 + "]" * 20000 + "\n"),
    ("1,500 nested mappings", "prompt: x\ntags: " + "{k: " * 1500 + "1" + "}" * 1500 + "\n"),
    ("`files: [../../etc/passwd]`", "prompt: x\nfiles: [../../etc/passwd]\n"),
    ("10 MB prompt", "prompt: " + "x" * 10_000_000 + "\n"),
    ("`retries: true`", "prompt: x\nretries: true\n"),
    ("`timeout_seconds: .nan`", "prompt: x\ntimeout_seconds: .nan\n"),
]


def _git_lines(repo: Path, *args: str) -> set[str]:
    """The lines git prints (only the `worktree PATH` ones of `worktree list --porcelain`)."""
    out = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
    ).stdout
    lines = set(out.splitlines())
    if "--porcelain" in args:
        lines = {x for x in lines if x.startswith("worktree ")}
    return lines


def bad_inputs(bench: Bench) -> list[Row]:
    """Each through `conductor run --local FILE` (the path that would create a worktree at
    once): exit code, lines on stderr, seconds, peak RSS, worktrees and branches it left."""
    rows = []
    for name, body in _BAD_INPUTS:
        path = bench.root / "bad.yaml"
        if isinstance(body, bytes):
            path.write_bytes(body)
        else:
            path.write_text(body)
        worktrees = _git_lines(bench.repo, "worktree", "list", "--porcelain")
        branches = _git_lines(bench.repo, "branch", "--list")
        began = time.monotonic()
        with tempfile.TemporaryFile(mode="w+") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "claude_conductor.cli.main", "run", "--local", str(path)],
                env=bench.env,
                cwd=bench.repo,
                stdout=subprocess.DEVNULL,
                stderr=err,
                text=True,
            )
            # wait4: this child's own peak RSS (kilobytes on Linux); bounded in time.
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() - began > _BAD_INPUT_TIMEOUT_SECONDS:
                    proc.kill()
                    _, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.05)
            proc.returncode = os.waitstatus_to_exitcode(status)
            seconds = time.monotonic() - began
            err.seek(0)
            stderr = err.read()
        peak_mib = usage.ru_maxrss / 1024
        new_worktrees = len(_git_lines(bench.repo, "worktree", "list", "--porcelain") - worktrees)
        new_branches = len(_git_lines(bench.repo, "branch", "--list") - branches)
        lines = stderr.strip().splitlines()
        message = lines[-1].replace(str(path), "bad.yaml") if lines else ""
        rows.append(
            Row(
                f"bad input: {name}",
                f"exit {proc.returncode}, {len(lines)} line(s), "
                f"{'no traceback' if 'Traceback' not in stderr else 'TRACEBACK'}, "
                f"{new_worktrees} worktrees and {new_branches} branches created",
                seconds,
                0,
                0,
                f"peak RSS {peak_mib:.0f} MiB; `{message[:140].replace('|', '/')}`",
            )
        )
    return rows


def markdown(rows: list[Row], meta: dict[str, Any]) -> str:
    lines = [
        f"# Reliability scenarios, {meta['date']}",
        "",
        f"Machine: {meta['machine']}. Load average before: {meta['load_before']}, after: "
        f"{meta['load_after']}; 1-minute load as each scenario began: "
        f"{', '.join(meta['load_during'])} (the machine was shared with other work: times "
        "are upper bounds). Produced by `benchmarks/reliability.py`; the standalone tier with "
        f"{meta['agents']} agent slots, the real `claude` against the scripted local model.",
        "",
        "| scenario | outcome | time to recover (s) | work lost | orphans | note |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        recover = f"{r.recover_seconds:.1f}" if r.recover_seconds is not None else "-"
        lines.append(
            f"| {r.scenario} | {r.outcome.replace('|', '/')} | {recover} | {r.work_lost} | "
            f"{r.orphans} | {r.note} |"
        )
    lines += [
        "",
        "Work lost: tasks whose result did not reach Prefect, or that succeeded without their "
        "commit (and the file the agent wrote in it). Orphans: the stack's flow-run processes, "
        "agents (and for the worker crash, every process the dead worker had started) still "
        "alive 15 s after every run was final; for `down`: any process of the stack left after "
        "it. Time to recover: see the note of each row; for bad inputs, the seconds until "
        "`conductor run --local FILE` exited.",
        "",
    ]
    return "\n".join(lines)


def _describe(info: dict[str, Any]) -> str:
    return (
        f"{info['cpus']} CPUs ({info['cpu_model']}), {info['ram_gib']} GiB, {info['os']}, "
        f"Python {info['python']}, Prefect {info['prefect']}, commit {info['git_commit']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flood", type=int, default=40)
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--skip", action="append", default=[], help="scenario names to skip")
    args = parser.parse_args()
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    out = args.out or RESULTS / f"reliability-{date}.md"
    meta: dict[str, Any] = {
        "date": date,
        "machine": _describe(machine()),
        "load_before": load_average(),
        "load_during": [],
        "agents": args.agents,
    }
    rows: list[Row] = []
    with (
        tempfile.TemporaryDirectory(prefix="conductor-reliability-") as tmp,
        ScriptedModel() as model,
    ):
        bench = Bench(Path(tmp), model, args.agents)
        try:
            ready = bench.up()
            print(f"stack up in {ready:.1f}s", file=sys.stderr)
            scenarios: list[tuple[str, Callable[[], list[Row]]]] = [
                ("kill", lambda: [kill_claude(bench, 1), kill_claude(bench, 0)]),
                ("server", lambda: [restart_server(bench)]),
                ("worker", lambda: [worker_crash(bench)]),
                ("flood", lambda: [flood(bench, args.flood)]),
                ("down", lambda: [down_while_running(bench)]),
                ("bad", lambda: bad_inputs(bench)),
            ]
            for name, run in scenarios:
                if name in args.skip:
                    continue
                print(f"scenario {name} ...", file=sys.stderr)
                meta["load_during"].append(f"{name} {load_average()[0]}")
                try:
                    got = run()
                except Exception as exc:  # a scenario that breaks is a finding, not a crash
                    got = [Row(name, f"harness error: {exc!r}"[:200], None, 0, 0)]
                rows += got
                for row in got:
                    print(row, file=sys.stderr)
        finally:
            standalone.down(bench.settings, grace_seconds=5)
    meta["load_after"] = load_average()
    text_md = markdown(rows, meta)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text_md, encoding="utf-8")
    print(text_md)


if __name__ == "__main__":
    main()
