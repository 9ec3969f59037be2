"""What the agents' Bash sandbox costs: one agent run (the real `claude` against the scripted
model) that runs three Bash commands and writes a file, with `agent.sandbox` on and off,
alternated so that load affects both alike. Reports min / median / max wall time of
`run_agent` and of each Bash tool call (tool_use -> tool_result in the transcript).

    .venv/bin/python benchmarks/agent_sandbox.py [--runs 7] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import RESULTS, load_average, machine, print_report, summary

from claude_conductor.agents.runtime import run_agent
from claude_conductor.demo.script_steps import text, tool_use
from claude_conductor.demo.scripted_model import ScriptedModel
from claude_conductor.models import TaskSpec
from claude_conductor.settings import AgentSettings, ConductorSettings

_STEPS = [
    tool_use("Bash", {"command": "echo one > one.txt", "description": "a"}),
    tool_use("Bash", {"command": "ls -la && cat one.txt", "description": "b"}),
    tool_use("Bash", {"command": "python3 -c 'print(1)'", "description": "c"}),
    tool_use("Write", {"file_path": "two.txt", "content": "two\n"}),
    text("done"),
]


def _bash_seconds(transcript: Path) -> list[float]:
    started: dict[str, float] = {}
    spans: list[float] = []
    for line in transcript.read_text().splitlines():
        event = json.loads(line)
        stamp = datetime.fromisoformat(event["ts"]).timestamp()
        if event.get("type") == "tool_use" and event.get("name") == "Bash":
            started[event["id"]] = stamp
        elif event.get("type") == "tool_result" and event.get("tool_use_id") in started:
            spans.append(stamp - started.pop(event["tool_use_id"]))
    return spans


async def _one(model: ScriptedModel, root: Path, sandbox: bool, index: int) -> dict[str, Any]:
    run_dir = root / f"{'on' if sandbox else 'off'}-{index}"
    workspace = run_dir / "ws"
    workspace.mkdir(parents=True)
    settings = ConductorSettings(
        home=run_dir / "home",
        agent=AgentSettings(sandbox=sandbox, result_grace_seconds=1, kill_grace_seconds=1),
    )
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(root / "agent-home"),
        "ANTHROPIC_BASE_URL": model.url,
        "ANTHROPIC_API_KEY": "sk-scripted-bench-0123456789",
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }
    spec = TaskSpec(kind="generic", prompt="bench [script:bench]", timeout_seconds=120)
    began = time.monotonic()
    outcome = await run_agent(
        spec,
        workspace,
        settings,
        transcript_path=run_dir / "t.jsonl",
        config_dir=run_dir / "cfg",
        base_env=env,
    )
    wall = time.monotonic() - began
    if outcome.status.value != "succeeded" or not (workspace / "one.txt").is_file():
        raise SystemExit(f"run {run_dir.name} ended {outcome.status.value}: {outcome.error}")
    return {"wall": wall, "bash": _bash_seconds(run_dir / "t.jsonl")}


async def _main(runs: int) -> dict[str, Any]:
    results: dict[str, dict[str, list[float]]] = {
        "on": {"wall": [], "bash": []},
        "off": {"wall": [], "bash": []},
    }
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as tmp, ScriptedModel() as model:
        (Path(tmp) / "agent-home").mkdir()
        model.add_script("bench", _STEPS)
        await _one(model, Path(tmp), True, -1)  # warm the page cache, not recorded
        for index in range(runs):
            for sandbox in (True, False) if index % 2 == 0 else (False, True):
                one = await _one(model, Path(tmp), sandbox, index)
                key = "on" if sandbox else "off"
                results[key]["wall"].append(one["wall"])
                results[key]["bash"] += one["bash"]
    return {
        "harness": "agent_sandbox.py",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "runs": runs,
        "sandbox_on": {k: summary(v) for k, v in results["on"].items()},
        "sandbox_off": {k: summary(v) for k, v in results["off"].items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs of each (default 7)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    print_report(asyncio.run(_main(args.runs)), args.out)
    return 0


if __name__ == "__main__":
    assert RESULTS.is_dir()
    raise SystemExit(main())
