"""The Kubernetes tier's two agent modes, side by side: submit -> the task's work started.

- warm pool: the engine and the work in the worker (placement ``process``), as in the
  agent-pool pods;
- Job per task: the engine in the worker, the work in a Job of its own (placement
  ``kubernetes``) on the emulated cluster of ``tests/kubernetes/kube_emulator.py`` (kmock's
  API plus the test kubelet, which runs the pod's container as a local process: no image pull,
  no scheduler, so a real cluster adds its own pod start-up, typically 1-5 s with the image
  cached).

Two kinds of task per mode: ``command`` (the work prints ``time.time()`` when it starts) and
``agent`` (the real ``claude`` against the scripted model: started = its first request to the
model). Each mode runs on its own standalone stack (real Prefect server and process worker,
``agents`` slots), one task at a time; min / median / max of ``--runs`` samples.

    .venv/bin/python benchmarks/kubernetes_modes.py [--runs 5] [--out-dir benchmarks/results]

Writes ``results/kubernetes-modes-<date>.json`` and ``.md`` (machine, date, load average).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import RESULTS, ROOT, free_port, load_average, machine, make_repo, summary

sys.path.insert(0, str(ROOT / "tests" / "kubernetes"))
from kube_emulator import emulated_cluster

from claude_conductor.client.connection import conductor_client
from claude_conductor.client.tasks import submit_task, wait_for_run
from claude_conductor.demo.script_steps import Request, Step, text
from claude_conductor.demo.scripted_model import ScriptedModel
from claude_conductor.models import TaskSpec
from claude_conductor.settings import ConductorSettings, ServerSettings
from claude_conductor.tiers import standalone

_STARTED = "import time; print('STARTED', repr(time.time()))"


async def _command_latency(settings: ConductorSettings, repo: Path) -> float:
    spec = TaskSpec(
        kind="command", command=f'python3 -c "{_STARTED}"', repo=str(repo), timeout_seconds=120
    )
    async with conductor_client(settings) as client:
        began = time.time()
        run = await submit_task(client, spec)
        final = await wait_for_run(client, run.id, timeout_seconds=300)
    assert final.state is not None and final.state.is_completed(), final.state
    result = json.loads((settings.results_dir / spec.id / "result.json").read_text())
    output = result["verify"]["output_tail"]
    started = float(output.split("STARTED", 1)[1].split()[0])
    return started - began


async def _agent_latency(settings: ConductorSettings, repo: Path, model: ScriptedModel) -> float:
    first: list[float] = []

    def answer(request: Request) -> Step:
        first.append(time.time())
        return text("Started.")

    marker = model.add_script(f"bench-{time.monotonic_ns()}", [answer])
    spec = TaskSpec(kind="generic", prompt=f"start {marker}", repo=str(repo), timeout_seconds=300)
    async with conductor_client(settings) as client:
        began = time.time()
        run = await submit_task(client, spec)
        final = await wait_for_run(client, run.id, timeout_seconds=300)
    assert final.state is not None and final.state.is_completed(), final.state
    return first[0] - began


def _mode(name: str, runs: int, extra_env: dict[str, str], model: ScriptedModel) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-k8s-{name}-") as tmp:
        root = Path(tmp)
        repo = make_repo(root)
        settings = ConductorSettings(
            home=root / "home",
            server=ServerSettings(port=free_port()),
            worker={"agents": 2},
            dashboard={"enabled": False},
        )
        clean = {
            k: v for k, v in os.environ.items() if not k.startswith(("CONDUCTOR_", "PREFECT_"))
        }
        env = {
            **clean,
            "HOME": str(root),
            "ANTHROPIC_BASE_URL": model.url,
            "ANTHROPIC_API_KEY": "sk-bench-0123456789",
            "CLAUDE_CODE_MAX_RETRIES": "0",
            "CONDUCTOR_HOME": str(settings.home),
            "CONDUCTOR_SERVER__PORT": str(settings.server.port),
            "CONDUCTOR_DASHBOARD__ENABLED": "false",
            **extra_env,
        }
        began = time.monotonic()
        standalone.up(settings, base_env=env, timeout_seconds=300)
        up_seconds = time.monotonic() - began
        try:
            asyncio.run(_command_latency(settings, repo))  # warm-up: first imports, caches
            commands = [asyncio.run(_command_latency(settings, repo)) for _ in range(runs)]
            agents = [asyncio.run(_agent_latency(settings, repo, model)) for _ in range(runs)]
        finally:
            standalone.down(settings, grace_seconds=5)
    return {
        "up_seconds": round(up_seconds, 1),
        "command_submit_to_started_s": summary(commands),
        "agent_submit_to_first_model_request_s": summary(agents),
    }


def _markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"# Kubernetes tier: submit -> work started, per agent mode ({result['date']})",
        "",
        f"Machine: {m['cpus']} CPU ({m['cpu_model']}), {m['ram_gib']} GiB, {m['os']}, Python "
        f"{m['python']}, Prefect {m['prefect']}, commit {m['git_commit']}. Load average before "
        f"{result['load_before']}, after {result['load_after']}. {result['runs']} runs per figure "
        "(after one warm-up), one task at a time, 2 slots.",
        "",
        "| mode | command task: submit -> started (s) min / median / max | agent: submit -> first "
        "model request (s) min / median / max |",
        "| --- | --- | --- |",
    ]
    for mode, data in result["modes"].items():
        c, a = data["command_submit_to_started_s"], data["agent_submit_to_first_model_request_s"]
        lines.append(
            f"| {mode} | {c['min']} / **{c['median']}** / {c['max']} | "
            f"{a['min']} / **{a['median']}** / {a['max']} |"
        )
    lines += ["", result["note"], ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    result: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(),
        "runs": args.runs,
        "load_before": load_average(),
        "modes": {},
        "note": (
            "Job per task runs on the emulated cluster (kmock + the test kubelet, container = "
            "a local process): it counts the attach helper, the Job and pod objects, the "
            "worktree streamed in over attach and the pod log followed back, but no image pull "
            "or scheduling. The warm pool is the process placement in the worker."
        ),
    }
    with ScriptedModel() as model:
        result["modes"]["warm pool (process)"] = _mode("warm", args.runs, {}, model)
        with emulated_cluster() as cluster:
            jobs_env = {
                "CONDUCTOR_AGENT__PLACEMENT": "kubernetes",
                "CONDUCTOR_AGENT__KUBERNETES__API_URL": cluster.url,
                "CONDUCTOR_AGENT__KUBERNETES__NAMESPACE": "bench",
            }
            result["modes"]["Job per task (kubernetes)"] = _mode("jobs", args.runs, jobs_env, model)
    result["load_after"] = load_average()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / f"kubernetes-modes-{result['date']}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(_markdown(result))
    print(_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
