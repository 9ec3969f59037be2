"""Benchmark the docker tier: cold start, warm start, idle memory, one task end to end.

    .venv/bin/python benchmarks/docker_stack.py            # writes benchmarks/results/docker_stack.*

Needs a Docker engine and the images (``bash .ci/docker-setup.sh``). It brings up a stack of
its own (a unique name, a temporary home, a free port, the scripted model), measures, and
removes it with its volumes. Nothing else on the engine is touched.

- cold start: ``conductor up --tier docker --offline-model`` on new volumes (database created
  and migrated) until the API answers through nginx and both workers poll.
- warm start: ``docker compose down`` (volumes kept), then the same ``up``.
- idle memory: after ``--idle-seconds`` with nothing to do, the sum of ``docker stats`` memory
  of the stack's containers (and each one).
- one task: ``conductor run --wait`` of the demo task (scripted model), submit to result.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
_UNITS = {
    "B": 1,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "kB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _bytes(text: str) -> float:
    for unit in sorted(_UNITS, key=len, reverse=True):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * _UNITS[unit]
    return float(text)


def _conductor(
    env: dict[str, str], *args: str, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "claude_conductor.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _checked(proc: subprocess.CompletedProcess[str], what: str) -> str:
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


def _memory(stack: str) -> dict[str, float]:
    names = subprocess.run(
        ["docker", "ps", "--filter", f"label=com.docker.compose.project={stack}",
         "--format", "{{.Names}}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    out = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}", *names],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    usage: dict[str, float] = {}
    for line in out.splitlines():
        name, used = line.split()[0], line.split()[1]
        service = name.removeprefix(f"{stack}-").rsplit("-", 1)[0]
        usage[service] = round(_bytes(used) / 1024**2, 1)
    return usage


def _machine() -> dict[str, Any]:
    server = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True
    ).stdout.strip()
    compose = subprocess.run(
        ["docker", "compose", "version", "--short"], capture_output=True, text=True
    ).stdout.strip()
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024**2, 1),
        "kernel": platform.release(),
        "os": platform.freedesktop_os_release().get("PRETTY_NAME", platform.platform()),
        "docker_engine": server,
        "docker_compose": compose,
        "python": platform.python_version(),
        # Other work on the machine slows every start (2 cores): recorded, not subtracted.
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "docker_stack.json")
    args = parser.parse_args(argv)
    if shutil.which("docker") is None:
        raise SystemExit("no docker CLI: run `bash .ci/docker-setup.sh` as root first")

    stack = f"bench-{secrets.token_hex(3)}"
    port = _free_port()
    work = Path(tempfile.mkdtemp(prefix="conductor-docker-bench-"))
    home, repos = work / "home", work / "repos"
    home.mkdir()
    repos.mkdir()
    uid = os.getuid() or 10001
    os.chown(repos, uid, uid)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDUCTOR_", "PREFECT_"))}
    env.update(
        {
            "CONDUCTOR_HOME": str(home),
            "CONDUCTOR_DOCKER__STACK": stack,
            "CONDUCTOR_DOCKER__HTTP_PORT": str(port),
            "CONDUCTOR_DOCKER__REPOS_DIR": str(repos),
        }
    )
    env.pop("ANTHROPIC_API_KEY", None)
    result: dict[str, Any] = {
        "benchmark": "docker tier stack",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "stack": stack,
    }
    try:
        started = time.monotonic()
        _checked(_conductor(env, "up", "--tier", "docker", "--offline-model", "--json"), "cold up")
        result["cold_start_seconds"] = round(time.monotonic() - started, 1)
        print(f"cold start: {result['cold_start_seconds']} s", flush=True)

        time.sleep(args.idle_seconds)
        idle = _memory(stack)
        result["idle_seconds_before_sample"] = args.idle_seconds
        result["idle_memory_mib"] = {
            "total": round(sum(idle.values()), 1),
            **dict(sorted(idle.items())),
        }
        print(f"idle memory: {result['idle_memory_mib']['total']} MiB", flush=True)

        from claude_conductor.demo.project import make_demo_repo

        repo = make_demo_repo(repos / "demo")
        subprocess.run(["chown", "-R", f"{uid}:{uid}", str(repo)], check=True)
        task = work / "task.yaml"
        task.write_text(
            yaml.safe_dump(
                {
                    "kind": "refactor",
                    "title": "benchmark demo task",
                    "prompt": "Add greet.py and use it in main.py [script:demo]",
                    "repo": str(repo),
                    "verify": "python3 main.py",
                }
            )
        )
        started = time.monotonic()
        done = json.loads(_checked(_conductor(env, "run", str(task), "--wait", "--json"), "run"))
        result["one_task"] = {
            "status": done["status"],
            "submit_to_result_seconds": round(time.monotonic() - started, 1),
            "flow_run_seconds": done["duration_seconds"],
        }
        print(f"one task: {result['one_task']}", flush=True)

        compose = [
            "docker", "compose", "--project-directory", str(ROOT / "deployments" / "docker"),
            "--env-file", str(home / "docker" / stack / "conductor.env"),
        ]  # fmt: skip
        subprocess.run([*compose, "down", "--timeout", "10"], capture_output=True, check=True)
        started = time.monotonic()
        _checked(_conductor(env, "up", "--tier", "docker", "--offline-model", "--json"), "warm up")
        result["warm_start_seconds"] = round(time.monotonic() - started, 1)
        print(f"warm start: {result['warm_start_seconds']} s", flush=True)
    finally:
        _conductor(env, "down", "--tier", "docker", "--volumes")
        shutil.rmtree(work, ignore_errors=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(_markdown(result), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


def _markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    mem = r["idle_memory_mib"]
    rows = "\n".join(f"| {name} | {mib} |" for name, mib in mem.items() if name != "total")
    return f"""# Docker tier: cold start and idle memory

Measured {r["date"]} by `benchmarks/docker_stack.py` on {m["os"]}, {m["cpus"]} CPUs,
{m["memory_gib"]} GiB, Docker {m["docker_engine"]}, Compose {m["docker_compose"]}; 1-minute
load average at start {m.get("load_average_1m_at_start", "?")} (other work on the machine
slows every start). The stack runs with the scripted model (profile `offline`); images were
built beforehand.

| measure | value |
| --- | --- |
| cold start (new volumes: database created and migrated) to ready | {r["cold_start_seconds"]} s |
| warm start (after `compose down`, volumes kept) to ready | {r["warm_start_seconds"]} s |
| memory at idle ({r["idle_seconds_before_sample"]:.0f} s after start), all containers | {mem["total"]} MiB |
| one demo task, `conductor run --wait` submit to result | {r["one_task"]["submit_to_result_seconds"]} s |

"Ready" means what `conductor up --tier docker` waits for: the API answers through nginx and
both workers have polled.

Idle memory by service (MiB, `docker stats`):

| service | MiB |
| --- | --- |
{rows}
"""


if __name__ == "__main__":
    raise SystemExit(main())
