"""What the sandbox of a task's own commands costs (`kind: command`, verify on the process
placement): `run_shell` through the process placement with `agent.sandbox` on (bubblewrap) and
off, alternated so that load affects both alike, in a linked git worktree as Conductor makes.
Reports min / median / max wall time of three commands: `true` (the floor), `git status`
(the metadata mounted read-only) and `python3 -c pass` (an interpreter start), through
`run_shell` (what a task sees; it polls for the exit every 50 ms, which hides smaller costs)
and spawned directly from the placement's plan (`raw_*`: the sandbox's own cost).

    .venv/bin/python benchmarks/shell_sandbox.py [--runs 21] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import RESULTS, load_average, machine, print_report, summary

from claude_conductor.agents.placement import LaunchRequest, ProcessPlacement
from claude_conductor.agents.shell import run_shell
from claude_conductor.settings import AgentSettings, ConductorSettings

COMMANDS = {"true": "true", "git_status": "git status --short", "python": "python3 -c pass"}


def _worktree(root: Path) -> Path:
    repo, worktree = root / "repo", root / "home" / "workspaces" / "bench"
    repo.mkdir()
    git = ["git", "-c", "user.name=b", "-c", "user.email=b@b", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=repo, check=True)
    (repo / "main.py").write_text("print('hi')\n")
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], cwd=repo, check=True)
    subprocess.run([*git, "worktree", "add", "-q", str(worktree), "-b", "b"], cwd=repo, check=True)
    return worktree


def _raw(placement: ProcessPlacement, command: str, worktree: Path, env: dict[str, str]) -> float:
    request = LaunchRequest("bench", "shell", ["/bin/sh", "-c", command], env, worktree, 30)
    plan = placement.plan(request)
    try:
        began = time.monotonic()
        subprocess.run(plan.argv, env=plan.env, cwd=plan.cwd, check=True, capture_output=True)
        return time.monotonic() - began
    finally:
        asyncio.run(plan.run_cleanup())


async def _main(runs: int) -> dict[str, Any]:
    results: dict[str, dict[str, list[float]]] = {"on": {}, "off": {}}
    load_before = load_average()
    env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8"}
    with tempfile.TemporaryDirectory(prefix="bench-shell-", dir="/var/tmp") as tmp:
        worktree = _worktree(Path(tmp))
        placements = {
            key: ProcessPlacement(
                ConductorSettings(home=Path(tmp) / "home", agent=AgentSettings(sandbox=on))
            )
            for key, on in (("on", True), ("off", False))
        }
        for index in range(runs + 1):
            order = ("on", "off") if index % 2 == 0 else ("off", "on")
            for key in order:
                for name, command in COMMANDS.items():
                    began = time.monotonic()
                    done = await run_shell(
                        command, worktree, 30, env, placement=placements[key], task_id="bench"
                    )
                    seconds = time.monotonic() - began
                    if done.exit_code != 0:
                        raise SystemExit(f"{name} ({key}) failed: {done.output_tail}")
                    if index > 0:  # the first round warms the page cache, not recorded
                        results[key].setdefault(name, []).append(seconds)
                    raw = await asyncio.to_thread(_raw, placements[key], command, worktree, env)
                    if index > 0:
                        results[key].setdefault(f"raw_{name}", []).append(raw)
    return {
        "harness": "shell_sandbox.py",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "runs": runs,
        "sandbox_on": {k: summary(v, digits=3) for k, v in results["on"].items()},
        "sandbox_off": {k: summary(v, digits=3) for k, v in results["off"].items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21, help="runs of each (default 21)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    print_report(asyncio.run(_main(args.runs)), args.out)
    return 0


if __name__ == "__main__":
    assert RESULTS.is_dir()
    raise SystemExit(main())
