"""A real Prefect server for the dashboard tests, with real conductor runs on it.

One server per test session (``prefect server start`` on a free port, PREFECT_HOME in a temp
dir). Finished tasks are real flow runs of a tiny in-process flow named ``conductor-task`` that
logs agent events and publishes a TaskResult with ``flows.results.publish_result``, exactly as
the real flow does; running and queued tasks are flow runs created in those states on the
``conductor-agents`` pool, with a worker heartbeat, as a worker would leave them. Nothing runs
an agent here: the real-agent end to end test lives with the standalone tier.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from claude_conductor.models import DiffStats, TaskResult, TaskSpec, TaskStatus, VerifyResult
from claude_conductor.settings import ConductorSettings

_SERVER_START_TIMEOUT_SECONDS = 90.0
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))

PATCH = """\
diff --git a/src/app.py b/src/app.py
index 3b18e51..a1c2d3e 100644
--- a/src/app.py
+++ b/src/app.py
@@ -1,5 +1,5 @@
-def foo(x):
+def bar(x):
     \"\"\"Double x.\"\"\"
     return 2 * x
{blank}
-print(foo(21))
+print(bar(21))
diff --git a/tests/test_app.py b/tests/test_app.py
new file mode 100644
index 0000000..5d6e7f8
--- /dev/null
+++ b/tests/test_app.py
@@ -0,0 +1,4 @@
+from src.app import bar
+
+def test_bar():
+    assert bar(21) == 42
""".format(blank=" ")  # a diff shows an empty context line as one space

TRANSCRIPT_LINES = [
    {
        "type": "system",
        "subtype": "init",
        "session_id": "sess-1",
        "model": "claude-sonnet-4-5",
        "permissionMode": "acceptEdits",
        "tools": ["Read", "Edit", "Write", "Bash"],
        "cwd": "/tmp/ws",
    },
    {
        "type": "assistant",
        "message": {
            "content": [{"type": "text", "text": "I'll rename `foo` to `bar` and add a test."}]
        },
    },
    {
        "type": "assistant",
        "message": {
            "content": [
                {
                    "type": "tool_use",
                    "id": "tu-1",
                    "name": "Edit",
                    "input": {"file_path": "src/app.py", "old_string": "foo", "new_string": "bar"},
                }
            ]
        },
    },
    {
        "type": "user",
        "message": {
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "tu-1",
                    "content": "The file src/app.py has been updated.",
                }
            ]
        },
    },
    {
        "type": "assistant",
        "message": {
            "content": [
                {
                    "type": "tool_use",
                    "id": "tu-2",
                    "name": "Bash",
                    "input": {"command": "pytest -q"},
                }
            ]
        },
    },
    {
        "type": "user",
        "message": {
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "tu-2",
                    "content": [{"type": "text", "text": "1 passed in 0.01s"}],
                }
            ]
        },
    },
    {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "result": "Renamed foo to bar; tests pass.",
        "num_turns": 4,
        "total_cost_usd": 0.1234,
        "usage": {"input_tokens": 12000, "output_tokens": 800},
    },
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(
    url: str, timeout_seconds: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before {url} answered")
        try:
            with _NO_PROXY.open(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout_seconds:.0f} s")


def stop_group(proc: subprocess.Popen[bytes], grace_seconds: float = 10.0) -> None:
    """Stop a process started with start_new_session=True, and everything it started."""
    if proc.poll() is None:
        for sig in (signal.SIGTERM, signal.SIGTERM):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=grace_seconds / 2)
                break
            except subprocess.TimeoutExpired:
                continue
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # whatever the leader left behind
    if proc.poll() is None:
        proc.wait(timeout=grace_seconds)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test item (browser tests save a screenshot on failure)."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@dataclass
class PrefectServer:
    api_url: str
    home: Path
    log: Path


@pytest.fixture(scope="package")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    log = home / "server.log"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    prefect = str(Path(sys.executable).with_name("prefect"))
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    api_url = f"http://127.0.0.1:{port}/api"
    try:
        wait_http(f"{api_url}/health", _SERVER_START_TIMEOUT_SECONDS, proc)
    except RuntimeError as exc:
        stop_group(proc)
        raise RuntimeError(f"{exc}; server log:\n{log.read_text()[-3000:]}") from exc
    try:
        yield PrefectServer(api_url, home, log)
    finally:
        stop_group(proc)


@pytest.fixture(scope="package")
def start_dashboard() -> Callable[[ConductorSettings, Path], Any]:
    """``with start_dashboard(settings, folder) as url:`` runs the real dashboard process
    (``dashboard_argv``/``dashboard_env``) on a free port until the block ends."""
    from claude_conductor.dashboard.launch import dashboard_argv, dashboard_env

    @contextlib.contextmanager
    def start(settings: ConductorSettings, folder: Path) -> Iterator[str]:
        port = free_port()
        log = folder / "streamlit.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                dashboard_argv(settings, port=port),
                env=dashboard_env(settings),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{url}/_stcore/health", 60, proc)
            yield url
        finally:
            stop_group(proc)

    return start


@pytest.fixture(scope="package")
def conductor_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("conductor-home")


@pytest.fixture(scope="package")
def conductor_env(prefect_server: PrefectServer, conductor_home: Path) -> Iterator[dict[str, str]]:
    """Point Conductor's settings (in this process: AppTest, data functions) at the server."""
    env = {
        "CONDUCTOR_HOME": str(conductor_home),
        "CONDUCTOR_API_URL": prefect_server.api_url,
        "CONDUCTOR_TIER": "standalone",
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mp.delenv("CONDUCTOR_DASHBOARD_PASSWORD", raising=False)
        yield env


@pytest.fixture(scope="package")
def settings(conductor_env: dict[str, str]) -> ConductorSettings:
    return ConductorSettings()


# --------------------------------------------------------------------------- seeded runs

_PLANS: dict[str, tuple[TaskResult, list[str]]] = {}


def _task_flow() -> Any:
    from prefect import flow, get_run_logger
    from prefect.states import Completed, Failed

    from claude_conductor.flows.results import publish_result

    @flow(name="conductor-task", persist_result=False)
    async def conductor_task(spec: dict[str, Any]) -> Any:
        result, events = _PLANS[spec["id"]]
        logger = get_run_logger()
        logger.info("task %s (%s) on %s", spec["id"], spec["kind"], spec["repo"])
        for line in events:
            logger.info("agent %s", line)
        await publish_result(result)
        if result.ok:
            return Completed(message="succeeded")
        return Failed(message=result.error or result.status.value)

    return conductor_task


async def _run_finished(
    api_url: str, spec: TaskSpec, result: TaskResult, events: list[str]
) -> None:
    from prefect import tags
    from prefect.logging.handlers import APILogHandler
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from claude_conductor.flows.fanout import submission_tags

    _PLANS[spec.id] = (result, events)
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        flow_fn = _task_flow().with_options(flow_run_name=spec.id)
        with tags(*submission_tags(spec)):
            await flow_fn(spec=spec.model_dump(mode="json"), return_state=True)
        await APILogHandler.aflush()


async def _ensure_pool(api_url: str, pool: str, slots: int, worker: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        async with get_client() as client:
            await client.create_work_pool(
                WorkPoolCreate(name=pool, type="process", concurrency_limit=slots),
                overwrite=True,
            )
            await client.send_worker_heartbeat(pool, worker, heartbeat_interval_seconds=600)
            flow_id = await client.create_flow_from_name("conductor-task")
            await client.create_deployment(flow_id, "run", work_pool_name=pool)


async def _create_run(
    api_url: str, spec: TaskSpec, state: str, pool: str, worker: str | None
) -> str:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Running, Scheduled

    from claude_conductor.flows.fanout import submission_tags

    flow_obj = _task_flow()
    new_state = Running() if state == "running" else Scheduled()
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        async with get_client() as client:
            run = await client.create_flow_run(
                flow_obj,
                name=spec.id,
                parameters={"spec": spec.model_dump(mode="json")},
                tags=submission_tags(spec),
                state=new_state,
                work_pool_name=pool,
            )
            if worker:
                await client.update_flow_run_labels(run.id, {"prefect.worker.name": worker})
    return str(run.id)


@dataclass
class Seeded:
    ok_id: str
    failed_id: str
    running_id: str
    queued_id: str
    pool: str
    worker: str
    patch_path: Path
    make_running: Callable[[str], str]
    finish: Callable[[str], None]


def _result(spec: TaskSpec, **fields: Any) -> TaskResult:
    now = datetime.now(UTC)
    base: dict[str, Any] = {
        "task_id": spec.id,
        "kind": spec.kind,
        "title": spec.display_title,
        "repo": spec.repo,
        "branch": spec.branch,
        "base_commit": "3b18e51aa",
        "head_commit": "a1c2d3e4f",
        "started_at": now - timedelta(seconds=fields.get("duration_seconds", 10)),
        "finished_at": now,
    }
    return TaskResult(**{**base, **fields})


@pytest.fixture(scope="package")
def seeded(
    prefect_server: PrefectServer,
    settings: ConductorSettings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Seeded:
    api_url = prefect_server.api_url
    files = tmp_path_factory.mktemp("results")
    pool, worker = settings.worker.pool, "worker-1"
    stamp = datetime.now(UTC).strftime("%H%M%S")

    ok = TaskSpec(
        id=f"ok-{stamp}",
        kind="refactor",
        repo="/srv/demo",
        prompt="Rename foo to bar",
        verify="pytest -q",
        priority=6,
    )
    patch = files / "ok.patch"
    patch.write_text(PATCH, encoding="utf-8")
    transcript = files / "ok.jsonl"
    transcript.write_text("\n".join(json.dumps(x) for x in TRANSCRIPT_LINES) + "\n")
    ok_result = _result(
        ok,
        status=TaskStatus.SUCCEEDED,
        summary="Renamed foo to bar; tests pass.",
        files_changed=["src/app.py", "tests/test_app.py"],
        diff_stats=DiffStats(files=2, insertions=6, deletions=2),
        patch_path=str(patch),
        cost_usd=0.1234,
        input_tokens=12000,
        output_tokens=800,
        num_turns=4,
        duration_seconds=42.5,
        transcript_path=str(transcript),
        verify=VerifyResult(
            command="pytest -q", exit_code=0, output_tail="1 passed in 0.01s", duration_seconds=0.4
        ),
    )

    failed = TaskSpec(
        id=f"failed-{stamp}",
        kind="code_review",
        repo="/srv/demo",
        prompt="Review the error handling",
        priority=3,
    )
    failed_patch = files / "failed.patch"
    failed_patch.write_text(PATCH.split("diff --git a/tests")[0], encoding="utf-8")
    failed_result = _result(
        failed,
        status=TaskStatus.FAILED,
        error="verify command 'pytest -q' exited with code 1",
        files_changed=["src/app.py"],
        patch_path=str(failed_patch),
        cost_usd=0.05,
        input_tokens=3000,
        output_tokens=200,
        num_turns=2,
        duration_seconds=120.0,
        verify=VerifyResult(command="pytest -q", exit_code=1, output_tail="1 failed"),
        transcript_path=str(files / "missing.jsonl"),
    )
    failed_events = [
        "started (model claude-sonnet-4-5, mode plan)",
        "says: Looking at the error handling.",
        "uses Read src/app.py",
        "tool result: def foo(x): ...",
        "finished: success, 2 turns, $0.0500",
    ]

    async def seed() -> tuple[str, str]:
        await _ensure_pool(api_url, pool, 2, worker)
        await _run_finished(api_url, ok, ok_result, ["says: I'll rename foo to bar."])
        await _run_finished(api_url, failed, failed_result, failed_events)
        running = TaskSpec(
            id=f"running-{stamp}",
            kind="test_generation",
            repo="/srv/demo",
            prompt="Write tests for bar",
            priority=5,
        )
        queued = TaskSpec(
            id=f"queued-{stamp}",
            kind="analysis",
            repo="/srv/demo",
            prompt="Find slow queries",
            priority=8,
        )
        await _create_run(api_url, running, "running", pool, worker)
        await _create_run(api_url, queued, "scheduled", pool, None)
        return running.id, queued.id

    running_id, queued_id = asyncio.run(seed())
    # The report keeps the failed task's diff; its .patch file is gone (another machine).
    failed_patch.unlink()

    def make_running(prefix: str) -> str:
        spec = TaskSpec(
            id=f"{prefix}-{datetime.now(UTC).strftime('%H%M%S%f')}",
            kind="generic",
            repo="/srv/demo",
            prompt="Keep working",
        )
        _in_thread(_create_run(api_url, spec, "running", pool, worker))
        return spec.id

    def finish(task_id: str) -> None:
        """End a running task as a worker would: publish its result, then Completed."""
        _in_thread(_finish_run(api_url, task_id))

    return Seeded(
        ok.id, failed.id, running_id, queued_id, pool, worker, patch, make_running, finish
    )


def _in_thread(coro: Any) -> Any:
    """Run a coroutine to its end from sync code that may be inside an event loop
    (playwright's sync API runs one)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool_thread:
        return pool_thread.submit(asyncio.run, coro).result()


async def _finish_run(api_url: str, task_id: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Completed

    from claude_conductor.client.tasks import find_run
    from claude_conductor.flows.results import publish_result

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        async with get_client() as client:
            run = await find_run(client, task_id)
            spec = TaskSpec.model_validate(run.parameters["spec"])
            result = _result(
                spec, status=TaskStatus.SUCCEEDED, summary="All done.", cost_usd=0.01,
                num_turns=1, duration_seconds=5.0,
            )  # fmt: skip
            await publish_result(result)  # outside a flow: keyed artifacts, as read by key
            await client.set_flow_run_state(run.id, Completed(message="succeeded"), force=True)
