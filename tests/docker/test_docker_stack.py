"""The docker tier end to end on a real Docker engine: the compose stack (PostgreSQL, Redis,
Prefect API + services, docker worker, coordinator, dashboard, nginx) with the scripted model,
driven with the `conductor` CLI as a user would. One stack for the module (see conftest.py).

The tests run in file order: the persistence test, which restarts the stack, comes last.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path
from typing import Any

import pytest
import yaml
from docker_stack_fixtures import Stack

from helpers import CHROMIUM_ARGS

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.timeout(900)]

DEMO_TASK = {
    "kind": "refactor",
    "title": "Add a greeting helper (docker tier)",
    "prompt": "Add greet(name) in greet.py and use it from main.py. [script:demo]",
    "files": ["main.py"],
    "verify": "python3 main.py",
    "timeout_seconds": 300,
    "max_turns": 10,
}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "safe.directory=*", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_up_reports_a_ready_stack(stack: Stack) -> None:
    info = stack.up_info
    assert info["tier"] == "docker" and info["healthy"] is True
    assert info["api_url"] == f"{stack.base_url}/api"
    assert info["dashboard_url"] == f"{stack.base_url}/dashboard/"
    assert {p["name"]: p["workers_online"] > 0 for p in info["pools"]} == {
        "conductor-agents": True,
        "conductor-coordinators": True,
    }
    running = {d["name"] for d in info["daemons"] if d["running"]}
    assert {"postgres", "redis", "prefect-server", "prefect-services", "worker",
            "coordinator", "dashboard", "nginx", "scripted-model"} <= running  # fmt: skip
    status = stack.cli("status", "--tier", "docker", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["healthy"] is True


def test_imported_config_reaches_the_stack(stack: Stack) -> None:
    """`config export` on standalone + `config import` here: the stack runs with those
    settings (agent slots on the pool, agent settings inside the containers)."""
    pool = stack.api("/api/work_pools/conductor-agents")
    assert pool["type"] == "docker"
    assert pool["concurrency_limit"] == 2
    shown = json.loads(stack.exec_in("dashboard", "conductor", "config", "show", "--json"))
    assert shown["agent"]["inactivity_timeout_seconds"] == 123
    assert shown["tier"] == "docker"


def test_a_task_runs_in_its_own_container_and_its_branch_comes_back(
    stack: Stack, demo_repo: Path
) -> None:
    result = stack.run_task({**DEMO_TASK, "repo": str(demo_repo)}, "demo-task")
    task_id = result["task_id"]
    assert result["status"] == "succeeded", result.get("error")
    assert sorted(result["files_changed"]) == ["greet.py", "main.py"]
    assert result["verify"]["output_tail"].strip() == "Hello, world!"
    # The branch is in the user's repository on the host, with the agent's work on it.
    branch = result["branch"]
    assert branch == f"conductor/{task_id}"
    assert "def greet" in _git(demo_repo, "show", f"{branch}:greet.py")
    assert _git(demo_repo, "status", "--porcelain") == ""  # the checkout is untouched
    # It ran in a container of its own, named after the task, started by the docker worker.
    logs = stack.compose("logs", "--no-color", "worker").stdout
    assert f"Creating Docker container '{task_id}'" in logs
    # Through nginx, the Prefect API has the run and its result ...
    run = stack.flow_run(task_id)
    assert run["state"]["type"] == "COMPLETED"
    artifacts = stack.api(
        "/api/artifacts/filter", {"artifacts": {"key": {"any_": [f"result-{task_id}"]}}}
    )
    assert artifacts, f"no result artifact for {task_id}"
    data = artifacts[0]["data"]
    assert (json.loads(data) if isinstance(data, str) else data)["branch"] == branch
    # ... and the dashboard (its own data layer, in its container, on its network) lists it.
    frame = stack.exec_in(
        "dashboard",
        "python",
        "-c",
        "from claude_conductor.dashboard.data import fetch_tasks;"
        "from claude_conductor.settings import load_settings;"
        "print(fetch_tasks(load_settings()).to_json(orient='records'))",
    )
    rows = {row["task_id"]: row for row in json.loads(frame.strip().splitlines()[-1])}
    assert task_id in rows, sorted(rows)
    assert rows[task_id]["status"] == "succeeded"


def test_four_tasks_on_two_slots_never_run_more_than_two_containers(
    stack: Stack, demo_repo: Path
) -> None:
    seen: list[int] = []
    inspected: list[dict[str, Any]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            ids = stack.agent_containers()
            seen.append(len(ids))
            if ids and not inspected:
                out = subprocess.run(
                    ["docker", "inspect", ids[0]], capture_output=True, text=True
                ).stdout
                if out.strip():
                    inspected.extend(json.loads(out))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    results: list[dict[str, Any]] = []
    threads = [
        threading.Thread(
            target=lambda i=i: results.append(
                stack.run_task({**DEMO_TASK, "repo": str(demo_repo), "title": f"slot {i}"}, f"s{i}")
            )
        )
        for i in range(4)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
    finally:
        stop.set()
        watcher.join(timeout=10)
    assert len(results) == 4
    assert [r["status"] for r in results] == ["succeeded"] * 4, [r.get("error") for r in results]
    assert max(seen) <= 2, f"more than 2 agent containers at once: {max(seen)}"
    assert max(seen) == 2, "the two slots were never used at the same time"
    # What an agent container is allowed: checked on a live one.
    assert inspected, "no agent container was seen while the tasks ran"
    container = inspected[0]
    host = container["HostConfig"]
    assert container["Config"]["User"] == f"{stack.agent_uid}:{stack.agent_uid}"
    assert host["ReadonlyRootfs"] is True
    assert host["AutoRemove"] is True
    assert host["NanoCpus"] == 1_000_000_000
    assert host["Memory"] == 2 * 1024**3
    assert host["CapDrop"] == ["ALL"]
    assert host["Privileged"] is False
    assert list(container["NetworkSettings"]["Networks"]) == [f"{stack.name}-agents"]
    # Each container goes once its run has ended (auto-removed).
    deadline = time.monotonic() + 60
    while stack.agent_containers() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert stack.agent_containers() == []


def test_a_fan_out_parent_runs_on_the_coordinator_and_its_subtasks_in_agent_containers(
    stack: Stack, demo_repo: Path
) -> None:
    result = stack.run_task(
        {
            "kind": "analysis",
            "title": "fan out in docker",
            "repo": str(demo_repo),
            "subtasks": [
                {"kind": "command", "title": "one", "command": "echo one", "repo": str(demo_repo)},
                {"kind": "command", "title": "two", "command": "echo two", "repo": str(demo_repo)},
            ],
        },
        "fanout",
    )
    assert result["status"] == "succeeded", result.get("error")
    subs = {sub["task_id"]: sub for sub in result["subtasks"]}
    assert len(subs) == 2
    assert all(sub["status"] == "succeeded" for sub in subs.values()), subs
    coordinator = stack.compose("logs", "--no-color", "coordinator").stdout
    assert result["task_id"] in coordinator  # the parent ran in the coordinator's process
    worker = stack.compose("logs", "--no-color", "worker").stdout
    for sub_id in subs:  # each subtask in an agent container of its own
        assert f"Creating Docker container '{sub_id}'" in worker


@pytest.mark.browser
def test_the_dashboard_behind_nginx_shows_the_task_in_a_browser(stack: Stack) -> None:
    """A person's path: nginx asks for the dashboard's credentials, the dashboard then asks
    for its own sign-in, and the task of the first test is there with its branch."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed: `apt-get install -y chromium` (Debian)")
    assert stack.task_ids, "needs the task of test_a_task_runs_in_its_own_container..."
    task_id = stack.task_ids[0]
    user, password = stack.dashboard_auth.split(":", 1)
    shots = Path(__file__).resolve().parents[2] / "test-output" / "docker-dashboard"
    shots.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            anonymous = browser.new_page()
            try:  # without credentials, nginx answers 401 and the browser shows nothing
                response = anonymous.goto(f"{stack.base_url}/dashboard/")
                assert response is not None and response.status == 401
            except sync_api.Error as exc:
                assert "ERR_INVALID_AUTH_CREDENTIALS" in str(exc)
            context = browser.new_context(http_credentials={"username": user, "password": password})
            page = context.new_page()
            page.goto(f"{stack.base_url}/dashboard/tasks?task={task_id}")
            page.get_by_label("Password", exact=True).fill(password)
            page.get_by_role("button", name="Sign in").click()
            expect = sync_api.expect
            expect(page.get_by_text(DEMO_TASK["title"]).first).to_be_visible(timeout=60_000)
            expect(page.get_by_text(f"conductor/{task_id}").first).to_be_visible(timeout=30_000)
            page.screenshot(path=str(shots / "task.png"), full_page=True)
            # The Prefect UI link stays on nginx's origin (not the internal prefect-server);
            # the UI there asks for the Prefect credentials, not the dashboard's.
            href = page.get_by_role("link", name="Prefect UI").get_attribute("href")
            assert href and href.startswith("/runs/flow-run/"), href
            prefect_user, prefect_password = stack.prefect_auth.split(":", 1)
            ui = browser.new_context(
                http_credentials={"username": prefect_user, "password": prefect_password}
            ).new_page()
            opened = ui.goto(stack.base_url + href)
            assert opened is not None and opened.status == 200
        finally:
            browser.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _service_ip(stack: Stack, service: str) -> str:
    out = subprocess.run(
        [
            "docker",
            "inspect",
            "--format",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            f"{stack.name}-{service}-1",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()[0]


PROBE = """
import os, socket, urllib.request
def reach(host, port):
    try:
        socket.create_connection((host, port), timeout=3).close()
        return "open"
    except OSError as exc:
        return type(exc).__name__
print("uid", os.getuid(), "gid", os.getgid())
try:
    open("/probe", "w")
    print("rootfs writable")
except OSError:
    print("rootfs read-only")
for name, host, port in [{targets}]:
    print("reach", name, reach(host, port))
"""


def test_agent_containers_are_non_root_and_reach_only_the_api_and_the_model(
    stack: Stack, demo_repo: Path
) -> None:
    """A command task runs in an agent container exactly as an agent would; it probes what
    it can reach. Other addresses are the stack's own containers (never outside hosts)."""
    targets = [
        ("prefect-api", "prefect-server", 4200),
        ("model", "scripted-model", 8765),
        ("postgres-by-name", "postgres", 5432),
        ("postgres-by-ip", _service_ip(stack, "postgres"), 5432),
        ("redis-by-ip", _service_ip(stack, "redis"), 6379),
        ("nginx-by-ip", _service_ip(stack, "nginx"), 8080),
        ("dashboard-by-ip", _service_ip(stack, "dashboard"), 8501),
    ]
    script = PROBE.replace("{targets}", ", ".join(repr(t) for t in targets))
    probe = demo_repo.parent / "probe.py"
    probe.write_text(script)
    result = stack.run_task(
        {
            "kind": "command",
            "title": "probe the agent container",
            "command": f"python3 {probe}",
            "repo": str(demo_repo),
            "timeout_seconds": 120,
        },
        "probe",
    )
    assert result["status"] == "succeeded", result.get("error")
    lines = dict(
        (" ".join(line.split()[:2]), line.split()[-1])
        for line in result["verify"]["output_tail"].splitlines()
        if line.startswith("reach")
    )
    out = result["verify"]["output_tail"]
    assert f"uid {stack.agent_uid} gid {stack.agent_uid}" in out
    assert "uid 0" not in out
    assert "rootfs read-only" in out
    assert lines["reach prefect-api"] == "open"
    assert lines["reach model"] == "open"
    for name, *_ in targets[2:]:
        assert lines[f"reach {name}"] != "open", f"an agent container reached {name}: {out}"


def test_nginx_refuses_without_credentials_and_answers_with_them(stack: Stack) -> None:
    for path in ("/api/health", "/api/work_pools/conductor-agents", "/", "/dashboard/"):
        status, _ = stack.http(path)
        assert status == 401, f"{path} answered {status} without credentials"
        status, _ = stack.http(path, "conductor:not-the-password")
        assert status == 401, f"{path} answered {status} with a wrong password"
    # Each side takes only its own credentials.
    assert stack.http("/dashboard/", stack.prefect_auth)[0] == 401
    assert stack.http("/api/health", stack.dashboard_auth)[0] == 401
    status, body = stack.http("/api/health", stack.prefect_auth)
    assert (status, body.strip()) == (200, b"true")
    status, body = stack.http("/", stack.prefect_auth)
    assert status == 200 and b"<html" in body.lower()  # the Prefect UI
    status, body = stack.http("/dashboard/", stack.dashboard_auth)
    assert status == 200 and b"streamlit" in body.lower()
    status, body = stack.http("/dashboard/_stcore/health", stack.dashboard_auth)
    assert (status, body.strip()) == (200, b"ok")


def _start_sleeper(stack: Stack, demo_repo: Path, seconds: int, name: str) -> tuple[str, Any]:
    """Submit a command task that sleeps; return its id once its container runs."""
    task = {
        "kind": "command",
        "title": f"sleep {seconds}",
        "command": f"sleep {seconds} && echo slept",
        "repo": str(demo_repo),
        "timeout_seconds": 600,
    }
    path = stack.home.parent / f"{name}.yaml"
    path.write_text(yaml.safe_dump(task))
    proc = stack.cli("run", str(path))
    assert proc.returncode == 0, proc.stderr
    task_id = next(w for w in proc.stderr.split() if w.startswith("t-"))
    stack.task_ids.append(task_id)
    run = stack.wait_state(task_id, 120, until={"RUNNING"})
    assert run["state"]["type"] == "RUNNING", run["state"]
    deadline = time.monotonic() + 60
    while not stack.agent_containers() and time.monotonic() < deadline:
        time.sleep(0.2)
    return task_id, run


def test_a_worker_restart_mid_task_ends_in_a_defined_state(stack: Stack, demo_repo: Path) -> None:
    """Stop the worker while a task runs, start it again: the run ends in a final state with a
    message (the agent container outlives its worker, so here it completes), never stuck."""
    task_id, _ = _start_sleeper(stack, demo_repo, 15, "restart")
    stack.compose("stop", "worker")
    time.sleep(3)
    stack.compose("start", "worker")
    run = stack.wait_state(task_id, 180)
    state = run["state"]
    assert state["type"] in {"COMPLETED", "FAILED", "CRASHED"}, state
    assert state["message"], state
    if state["type"] == "COMPLETED":
        result = json.loads(stack.cli("tasks", "show", task_id, "--json").stdout)
        assert "slept" in json.dumps(result)


def test_a_task_whose_container_dies_while_no_worker_watches_ends_crashed(
    stack: Stack, demo_repo: Path
) -> None:
    """Stop the worker, kill the agent container, start the worker: no one is left to report,
    so the run's missing heartbeats mark it Crashed (the stack's zombie automation)."""
    task_id, _ = _start_sleeper(stack, demo_repo, 600, "zombie")
    time.sleep(2)  # its first heartbeat is out
    stack.compose("stop", "worker")
    for container in stack.agent_containers():
        subprocess.run(["docker", "kill", container], capture_output=True, check=True)
    stack.compose("start", "worker")
    run = stack.wait_state(task_id, 240)
    state = run["state"]
    assert state["type"] == "CRASHED", state
    assert "heartbeat" in state["message"], state


def test_tls_is_optional_and_asks_for_the_same_credentials(stack: Stack, tmp_path: Path) -> None:
    """With a certificate configured, `up` adds nginx's HTTPS port; a client that trusts the
    certificate gets the same answers (and refusals) as over HTTP."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        capture_output=True, check=True,
    )  # fmt: skip
    port = _free_port()
    env = {
        "CONDUCTOR_DOCKER__TLS_CERT": str(cert),
        "CONDUCTOR_DOCKER__TLS_KEY": str(key),
        "CONDUCTOR_DOCKER__HTTPS_PORT": str(port),
    }
    up = stack.cli("up", "--tier", "docker", "--offline-model", "--json", timeout=900, env=env)
    assert up.returncode == 0, up.stderr
    context = ssl.create_default_context(cafile=str(cert))
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )

    def get(path: str, auth: str | None) -> int:
        request = urllib.request.Request(f"https://127.0.0.1:{port}{path}")
        if auth:
            request.add_header("Authorization", "Basic " + b64encode(auth.encode()).decode())
        try:
            with opener.open(request, timeout=30) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    assert get("/api/health", None) == 401
    assert get("/dashboard/", None) == 401
    assert get("/api/health", stack.prefect_auth) == 200
    assert get("/dashboard/", stack.dashboard_auth) == 200


def test_history_survives_down_and_up(stack: Stack, demo_repo: Path) -> None:
    """`conductor down --tier docker` (compose down, volumes kept) while a task runs, then up
    again: the running task was stopped and marked Crashed, and every task and its result is
    still there, read through the CLI from the PostgreSQL volume."""
    running_id, _ = _start_sleeper(stack, demo_repo, 300, "interrupted")
    listed = stack.cli("tasks", "list", "--json")
    before = {row["task_id"]: row for row in json.loads(listed.stdout)}
    assert set(stack.task_ids) <= set(before)
    down = stack.cli("down", "--tier", "docker")
    assert down.returncode == 0, down.stderr
    assert stack.compose("ps", "-aq").stdout.strip() == ""
    assert stack.agent_containers() == []
    up = stack.cli("up", "--tier", "docker", "--offline-model", "--json", timeout=900)
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["healthy"] is True
    after = {row["task_id"]: row for row in json.loads(stack.cli("tasks", "list", "--json").stdout)}
    for task_id, row in before.items():
        if task_id != running_id:
            assert after[task_id]["status"] == row["status"], task_id
            assert after[task_id]["state"] == row["state"], task_id
    interrupted = stack.flow_run(running_id)["state"]
    assert interrupted["type"] == "CRASHED", interrupted
    # Said by the worker (it saw the container stopped) or by `down` itself, whichever first.
    assert "SIGTERM" in interrupted["message"] or "conductor down" in interrupted["message"]
    first = stack.task_ids[0]
    shown = stack.cli("tasks", "show", first, "--json")
    assert f"conductor/{first}" in shown.stdout
