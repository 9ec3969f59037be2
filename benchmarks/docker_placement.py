"""Benchmark the ``docker`` placement: what running a launch in its own container costs over a
child process (the ``process`` placement), for one short command.

    .venv/bin/python benchmarks/docker_placement.py [--runs 7] [--image claude-conductor:latest]

Needs a Docker engine and the app image (``bash .ci/docker-setup.sh``). It makes an internal
network of its own (removed at the end) and a scratch git worktree, then times ``run_shell("true")``
through each placement, ``--runs`` times each, and prints the median, min and max, with the
machine, its load and the date (a busy machine makes every figure larger: record the load).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from claude_conductor.agents.placement import Placement, get_placement
from claude_conductor.agents.shell import run_shell
from claude_conductor.settings import ConductorSettings


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "safe.directory=*", *args], cwd=cwd, check=True,
                   capture_output=True)  # fmt: skip


def _worktree(root: Path, uid: int) -> Path:
    repo, ws = root / "repo", root / "home" / "workspaces" / "t-bench"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "a.txt").write_text("a\n")
    _git(repo, "add", "a.txt")
    _git(repo, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "a")
    ws.parent.mkdir(parents=True)
    _git(repo, "worktree", "add", "-q", "-b", "conductor/t-bench", str(ws))
    if os.getuid() == 0:
        subprocess.run(["chown", "-R", f"{uid}:{uid}", str(root)], check=True)
    return ws


def _time(placement: Placement, ws: Path, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        done = asyncio.run(
            run_shell("true", ws, 120, {"PATH": "/usr/bin:/bin"}, placement=placement,
                      task_id="t-bench")
        )  # fmt: skip
        out.append(time.perf_counter() - started)
        if done.exit_code != 0:
            raise SystemExit(f"the launch failed: {done.output_tail}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--image", default="claude-conductor:latest")
    args = parser.parse_args()
    uid = os.getuid() or 10001
    network = f"bench-{secrets.token_hex(3)}"
    subprocess.run(
        ["docker", "network", "create", "--internal",
         "-o", "com.docker.network.bridge.inhibit_ipv4=true", network],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ws = _worktree(Path(tmp), uid)
            base = {"home": str(Path(tmp) / "home")}
            process = get_placement(ConductorSettings.model_validate(base))
            docker = get_placement(
                ConductorSettings.model_validate(
                    {
                        **base,
                        "agent": {
                            "placement": "docker",
                            "docker": {
                                "network": network,
                                "image": args.image,
                                "user": f"{uid}:{uid}",
                            },
                        },
                    }
                )
            )
            rows = {
                "process": _time(process, ws, args.runs),
                "docker": _time(docker, ws, args.runs),
            }
    finally:
        subprocess.run(["docker", "network", "rm", network], capture_output=True)
    load = os.getloadavg()
    print(f"# docker placement vs process placement: run_shell('true'), {args.runs} runs each")
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs, "
          f"load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}, python {sys.version.split()[0]}")  # fmt: skip
    print("| placement | median s | min s | max s |\n|---|---|---|---|")
    for name, values in rows.items():
        print(
            f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
