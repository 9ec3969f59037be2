"""The exporter on a real stack: a Prefect server, the real agent worker (one slot), real
`claude` agents talking to the scripted model, ``conductor metrics serve`` in its own
process, and a real Prometheus (Debian's package) scraping it. JSON logs are on for the whole
stack. One stack and one set of tasks serve the module: the tests read what that run left.

The run: task A holds the only slot (its Bash waits for a gate file), B (urgent, the model
answers HTTP 500) and C (low, the model never answers; 8 s timeout) queue behind it; then the
gate opens and all three finish.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from metrics_support import (
    PROMETHEUS_YML,
    RULES,
    dashboard_exprs,
    names_in,
    need_binary,
    rule_exprs,
    samples,
    value,
)

from claude_conductor.agents.argv import find_claude
from claude_conductor.client.connection import run_sync
from claude_conductor.client.tasks import api_client, find_run, submit_task
from claude_conductor.demo.script_steps import error, stall, text, tool_use
from claude_conductor.demo.scripted_model import ScriptedModel
from claude_conductor.models import TaskSpec
from claude_conductor.settings import ConductorSettings
from claude_conductor.system import processes
from claude_conductor.tiers import standalone
from claude_conductor.tiers.standalone import launch
from helpers import make_repo
from stack_fixtures import free_port, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

API_KEY = "sk-metrics-test-key-0123456789"
T = TypeVar("T")

GATE = """import os, sys, time
began = time.time()
while not os.path.exists(sys.argv[1]) and time.time() - began < 120:
    time.sleep(0.1)
"""


def _wait_for(predicate: Callable[[], T], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(1.0)  # every poll costs the shared machine's Prefect server queries
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


_T0 = time.monotonic()


def _mark(label: str) -> None:
    """Progress on stderr (shown with -s): where the module's time goes."""
    print(f"[metrics-stack +{time.monotonic() - _T0:6.1f}s] {label}", file=sys.stderr)


def _get(url: str, timeout: float = 30) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        body: bytes = resp.read()
    return body.decode()


@dataclass
class Exporter:
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log: Path) -> None:
        argv = [
            sys.executable, "-m", "claude_conductor.cli.main", "metrics", "serve",
            "--host", "127.0.0.1", "--port", str(self.port), "--ttl-seconds", "1",
            "--cost-budget-usd-per-hour", "5",
        ]  # fmt: skip
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, env=self.env, stdout=out, stderr=out, start_new_session=True
            )
        _wait_for(self._healthy, 90, "the exporter's /healthz")

    def _healthy(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, "the exporter exited"
        try:
            return _get(f"{self.url}/healthz", timeout=2) == "ok\n"
        except OSError:
            return False

    def scrape(self) -> str:
        return _get(f"{self.url}/metrics")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)


@dataclass
class Run:
    settings: ConductorSettings
    exporter: Exporter
    tmp: Path
    ids: dict[str, str]
    flow_run_ids: dict[str, str]
    scrapes: dict[str, str]


def _submit(settings: ConductorSettings, spec: TaskSpec) -> str:
    async def go() -> str:
        async with api_client(settings) as client:
            run = await submit_task(client, spec)
        return str(run.id)

    return run_sync(go())


def _state(settings: ConductorSettings, task_id: str) -> str | None:
    async def go() -> str | None:
        async with api_client(settings) as client:
            run = await find_run(client, task_id)
        return run.state.name if run.state and run.state.is_final() else None

    return run_sync(go())


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, agent_home: Path) -> Iterator[Run]:
    try:
        find_claude(ConductorSettings())
    except Exception as exc:  # pragma: no cover - only without the dev install
        pytest.skip(f"no claude binary: {exc}")
    root = tmp_path_factory.mktemp("metrics-stack")
    repo = make_repo(root / "project")
    settings = make_settings(root / "home", free_port(), agents=1).model_copy(
        update={"log_format": "json"}
    )
    with ScriptedModel() as model:
        clean = {
            k: v for k, v in os.environ.items() if not k.startswith(("CONDUCTOR_", "PREFECT_"))
        }
        env = {
            **clean,
            "ANTHROPIC_BASE_URL": model.url,
            "ANTHROPIC_API_KEY": API_KEY,
            "CLAUDE_CODE_MAX_RETRIES": "0",
            "HOME": str(agent_home),
            "CONDUCTOR_HOME": str(settings.home),
            "CONDUCTOR_SERVER__PORT": str(settings.server.port),
            "CONDUCTOR_WORKER__QUERY_SECONDS": "0.5",
            "CONDUCTOR_DASHBOARD__ENABLED": "false",
            "CONDUCTOR_AGENT__RESULT_GRACE_SECONDS": "1",
            "CONDUCTOR_AGENT__KILL_GRACE_SECONDS": "1",
            "CONDUCTOR_LOG_FORMAT": "json",
        }
        exporter = Exporter(env=env)
        try:
            _mark("stack starting")
            standalone.up(settings, base_env=env, timeout_seconds=240)
            _mark("stack up")
            exporter.start(root / "exporter.log")
            _mark("exporter up")
            yield _drive(settings, exporter, model, repo, root)
        finally:
            exporter.stop()
            standalone.down(settings, grace_seconds=5)


def _drive(
    settings: ConductorSettings, exporter: Exporter, model: ScriptedModel, repo: Path, tmp: Path
) -> Run:
    gate = tmp / "gate"
    waiter = tmp / "wait_gate.py"
    waiter.write_text(GATE)
    held = model.add_script(
        "held",
        [tool_use("Bash", {"command": f"{sys.executable} {waiter} {gate}"}), text("Done waiting.")],
    )
    failing = model.add_script("apierr", [error(500, "scripted overload")])
    hanging = model.add_script("hang", [stall(600)])
    scrapes = {"before": exporter.scrape()}
    specs = {
        "a": TaskSpec(prompt=f"hold the slot {held}", repo=str(repo), timeout_seconds=180),
        "b": TaskSpec(prompt=f"fail {failing}", repo=str(repo), priority=9, timeout_seconds=120),
        "c": TaskSpec(prompt=f"hang {hanging}", repo=str(repo), priority=2, timeout_seconds=8),
    }
    ids = {k: s.id for k, s in specs.items()}
    flow_run_ids = {"a": _submit(settings, specs["a"])}
    scrapes["submitted"] = _wait_for(
        lambda: (
            (s := exporter.scrape())
            and value(s, "conductor_tasks_submitted_total")
            > value(scrapes["before"], "conductor_tasks_submitted_total")
            and s
        ),
        30,
        "the submission to be counted",
    )
    _mark("A submitted")
    scrapes["started"] = _wait_for(
        lambda: (
            (s := exporter.scrape())
            and value(s, "conductor_agents_running", pool="agents") == 1
            and s
        ),
        120,
        "task A to run",
    )
    _mark("A running")
    flow_run_ids["b"] = _submit(settings, specs["b"])
    flow_run_ids["c"] = _submit(settings, specs["c"])
    scrapes["queued"] = _wait_for(
        lambda: (
            (s := exporter.scrape()) and value(s, "conductor_queue_depth", pool="agents") == 2 and s
        ),
        60,
        "B and C to queue",
    )
    _mark("B, C queued")
    gate.write_text("go")
    for key in ("a", "b", "c"):
        _wait_for(lambda k=key: _state(settings, ids[k]), 240, f"task {key} to end")
        _mark(f"{key} ended")
    scrapes["finished"] = _wait_for(
        lambda: (
            (s := exporter.scrape())
            and value(s, "conductor_tasks_total")
            - value(scrapes["before"], "conductor_tasks_total")
            >= 3
            and s
        ),
        60,
        "the counters to count all three",
    )
    return Run(settings, exporter, tmp, ids, flow_run_ids, scrapes)


def _delta(run: Run, name: str, **labels: str) -> float:
    return value(run.scrapes["finished"], name, **labels) - value(
        run.scrapes["before"], name, **labels
    )


def test_counters_and_queue_gauge_follow_submit_start_finish(run: Run) -> None:
    before, s = run.scrapes["before"], run.scrapes
    assert value(before, "conductor_prefect_api_up") == 1
    assert value(before, "conductor_agent_slots", pool="agents") == 1
    assert value(before, "conductor_workers_online", pool="agents") >= 1
    assert value(s["submitted"], "conductor_tasks_submitted_total") == (
        value(before, "conductor_tasks_submitted_total") + 1
    )
    assert value(s["started"], "conductor_tasks_started_total") == (
        value(before, "conductor_tasks_started_total") + 1
    )
    queued = s["queued"]
    assert value(queued, "conductor_queue_depth", pool="agents", priority="urgent") == 1
    assert value(queued, "conductor_queue_depth", pool="agents", priority="low") == 1
    assert value(queued, "conductor_agents_running", pool="agents") == 1
    finished = s["finished"]
    assert value(finished, "conductor_queue_depth", pool="agents") == 0
    assert value(finished, "conductor_agents_running", pool="agents") == 0
    assert _delta(run, "conductor_tasks_submitted_total") == 3
    assert _delta(run, "conductor_tasks_total", kind="generic", status="succeeded") == 1
    assert _delta(run, "conductor_tasks_total", kind="generic", status="failed") == 1
    assert _delta(run, "conductor_tasks_total", kind="generic", status="timed_out") == 1
    assert _delta(run, "conductor_task_duration_seconds_count") == 3
    assert _delta(run, "conductor_task_start_latency_seconds_count") == 3
    assert _delta(run, "conductor_cost_usd_total", kind="generic") > 0
    assert _delta(run, "conductor_tokens_total", kind="generic", type="output") > 0


def test_api_error_and_timeout_show_under_their_reasons(run: Run) -> None:
    assert _delta(run, "conductor_agent_exits_total", reason="api_error_500") == 1
    assert _delta(run, "conductor_agent_exits_total", reason="timeout") == 1
    assert _delta(run, "conductor_agent_exits_total", reason="success") == 1


def test_a_restarted_exporter_counts_the_same_totals(run: Run) -> None:
    run.exporter.stop()
    run.exporter.start(run.tmp / "exporter.log")
    again = run.exporter.scrape()
    for name in (
        "conductor_tasks_total",
        "conductor_agent_exits_total",
        "conductor_cost_usd_total",
    ):
        assert value(again, name) == pytest.approx(value(run.scrapes["finished"], name)), name


def test_rule_and_dashboard_names_exist_in_the_live_output(run: Run) -> None:
    live = {name for name, _, _ in samples(run.exporter.scrape())}
    missing = names_in(rule_exprs() + dashboard_exprs()) - live
    assert not missing, sorted(missing)


def _prometheus_config(tmp: Path, target: str) -> Path:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    config["global"]["scrape_timeout"] = "1s"
    config["rule_files"] = [str(p) for p in RULES]
    config["scrape_configs"][0]["static_configs"][0]["targets"] = [target]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _query(base: str, promql: str) -> list[dict[str, Any]]:
    try:
        body = _get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    except OSError:  # not listening yet
        return []
    doc = json.loads(body)
    return _result(doc)


def _result(doc: dict[str, Any]) -> list[dict[str, Any]]:
    assert doc["status"] == "success", doc
    result: list[dict[str, Any]] = doc["data"]["result"]
    return result


def _alive(proc: subprocess.Popen[bytes], log: Path) -> bool:
    assert proc.poll() is None, f"prometheus exited: {log.read_text()[-2000:]}"
    return True


def test_a_real_prometheus_scrapes_the_exporter(run: Run) -> None:
    binary = need_binary("prometheus")
    port = free_port()
    config = _prometheus_config(run.tmp, f"127.0.0.1:{run.exporter.port}")
    base = f"http://127.0.0.1:{port}"
    argv = [
        binary, f"--config.file={config}", f"--storage.tsdb.path={run.tmp / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
    ]  # fmt: skip
    with (run.tmp / "prometheus.log").open("ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
    try:
        series = _wait_for(
            lambda: (
                _alive(proc, run.tmp / "prometheus.log")
                and _query(base, 'conductor_tasks_total{status="timed_out"}')
            ),
            90,
            "Prometheus to scrape conductor_tasks_total",
        )
        assert series[0]["metric"]["job"] == "conductor"
        assert series[0]["metric"]["kind"] == "generic"
        assert float(series[0]["value"][1]) >= 1
        depth = _query(base, 'sum(conductor_queue_depth{pool="agents"})')
        assert depth and float(depth[0]["value"][1]) == 0
        exits = _query(base, 'conductor_agent_exits_total{reason="api_error_500"}')
        assert exits and float(exits[0]["value"][1]) >= 1
        rules = json.loads(_get(f"{base}/api/v1/rules"))["data"]["groups"]
        assert {g["name"] for g in rules} >= {"conductor-recording", "conductor-alerts"}
        bad = [r["name"] for g in rules for r in g["rules"] if r.get("health") == "err"]
        assert not bad, f"rules failing to evaluate: {bad}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode is not None


def _split_lines(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The log's JSON lines, and the lines that are not JSON (the Prefect CLI's own
    banners such as "Worker ... started!", printed rather than logged, and the daemon
    header Conductor writes before starting the process)."""
    parsed, plain = [], []
    for ln in path.read_text(errors="replace").splitlines():
        if not ln.strip():
            continue
        try:
            parsed.append(json.loads(ln))
        except json.JSONDecodeError:
            plain.append(ln)
    return parsed, plain


def test_json_logs_carry_the_task_on_every_line_of_a_task(run: Run) -> None:
    daemon = processes.read_daemon(run.settings, launch.AGENT_WORKER)
    assert daemon is not None
    # The worker's log holds its own lines and those of the flow runs it starts.
    lines, plain = _split_lines(daemon.log_path)
    everything = [*run.ids.values(), *run.flow_run_ids.values()]
    tasks_plain = [ln for ln in plain if any(x in ln for x in everything)]
    assert not tasks_plain, f"lines of a task that are not JSON: {tasks_plain[:3]}"
    assert len(lines) > 3 * len(plain), f"mostly plain text: {plain[:5]}"
    for key, task_id in run.ids.items():
        flow_run_id = run.flow_run_ids[key]
        mine = [d for d in lines if d.get("flow_run_id") == flow_run_id]
        assert len(mine) >= 3, f"task {key}: only {len(mine)} lines"
        assert all(d["task_id"] == task_id for d in mine), [
            d for d in mine if d["task_id"] != task_id
        ][:3]
        # Any line that speaks of the task or its run names it in its fields.
        about = [d for d in lines if task_id in d["message"] or flow_run_id in d["message"]]
        assert all(d["task_id"] == task_id for d in about), [
            d for d in about if d["task_id"] != task_id
        ][:3]
    held = [d for d in lines if d.get("task_id") == run.ids["a"]]
    assert any("agent uses Bash" in d["message"] for d in held)
    texts = [(d["logger"], d.get("task_run"), d["message"]) for d in held]
    assert len(texts) == len(set(texts)), "a line was written twice"
    assert all({"ts", "level", "logger", "message"} <= set(d) for d in lines)
    assert API_KEY not in daemon.log_path.read_text()
