"""The docker tier end to end on a real Docker engine: the compose stack (PostgreSQL, Redis,
Prefect API + services, the worker running each task's engine, coordinator, dashboard, nginx,
egress proxy) with the scripted model, driven with the `conductor` CLI as a user would; each
task's agent runs in a container of its own. One stack for the module (see conftest.py).

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

from claude_conductor.agents.docker_placement import STACK_LABEL, TASK_LABEL
from claude_conductor.tiers.docker.configure import WORKER_TYPE
from helpers import CHROMIUM_ARGS

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.timeout(1500)]

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
            "coordinator", "dashboard", "nginx", "scripted-model", "egress-proxy"} <= running  # fmt: skip
    status = stack.cli("status", "--tier", "docker", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["healthy"] is True


def test_imported_config_reaches_the_stack(stack: Stack) -> None:
    """`config export` on standalone + `config import` here: the stack runs with those
    settings (agent slots on the pool, agent settings inside the containers)."""
    pool = stack.api("/api/work_pools/conductor-agents")
    assert pool["type"] == WORKER_TYPE  # engines run in the worker; agents in containers
    assert pool["concurrency_limit"] == 2
    shown = json.loads(stack.exec_in("dashboard", "conductor", "config", "show", "--json"))
    assert shown["agent"]["inactivity_timeout_seconds"] == 123
    assert shown["tier"] == "docker"


class _ContainerWatch:
    """Records this stack's agent containers (names, and the first one's inspect data) while a
    test runs: what `docker ps` shows a user."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.names: set[str] = set()
        self.counts: list[int] = []
        self.inspected: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        # Every container the stack creates, however short-lived (a verify container can come
        # and go between two `docker ps`).
        self._events = subprocess.Popen(
            ["docker", "events", "--filter", f"label={STACK_LABEL}={stack.name}",
             "--filter", "type=container", "--filter", "event=create",
             "--format", "{{.Actor.Attributes.name}}"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read_events, daemon=True)

    def _read_events(self) -> None:
        assert self._events.stdout is not None
        for line in self._events.stdout:
            if line.strip():
                self.names.add(line.strip())

    def _watch(self) -> None:
        label = f"label={STACK_LABEL}={self.stack.name}"
        while not self._stop.is_set():
            out = subprocess.run(
                ["docker", "ps", "--filter", label, "--format", "{{.ID}} {{.Names}}"],
                capture_output=True, text=True,
            ).stdout.split("\n")  # fmt: skip
            rows = [line.split() for line in out if line.strip()]
            self.counts.append(len(rows))
            self.names.update(name for _, name in rows)
            if rows and not self.inspected:
                data = subprocess.run(
                    ["docker", "inspect", rows[0][0]], capture_output=True, text=True
                ).stdout
                if data.strip():
                    self.inspected.extend(json.loads(data))
            time.sleep(0.2)

    def __enter__(self) -> _ContainerWatch:
        self._reader.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        time.sleep(0.5)  # the last events
        self._events.terminate()
        self._events.wait(timeout=10)
        self._reader.join(timeout=10)


def test_a_task_runs_in_its_own_container_and_its_branch_comes_back(
    stack: Stack, demo_repo: Path
) -> None:
    with _ContainerWatch(stack) as watch:
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
    # The agent ran in a container of its own, and so did the verify command; both are gone.
    kinds = {name.split(f"{task_id}-", 1)[1].split("-")[0] for name in watch.names}
    assert kinds == {"agent", "shell"}, watch.names
    assert stack.agent_containers() == []
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
    results: list[dict[str, Any]] = []
    threads = [
        threading.Thread(
            target=lambda i=i: results.append(
                stack.run_task({**DEMO_TASK, "repo": str(demo_repo), "title": f"slot {i}"}, f"s{i}")
            )
        )
        for i in range(4)
    ]
    with _ContainerWatch(stack) as watch:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
    assert len(results) == 4
    assert [r["status"] for r in results] == ["succeeded"] * 4, [r.get("error") for r in results]
    assert max(watch.counts) <= 2, f"more than 2 agent containers at once: {max(watch.counts)}"
    assert max(watch.counts) == 2, "the two slots were never used at the same time"
    # What an agent container is allowed: checked on a live one.
    assert watch.inspected, "no agent container was seen while the tasks ran"
    container = watch.inspected[0]
    host = container["HostConfig"]
    assert container["Config"]["User"] == f"{stack.agent_uid}:{stack.agent_uid}"
    assert host["ReadonlyRootfs"] is True
    assert host["NanoCpus"] == 1_000_000_000
    assert host["Memory"] == 2 * 1024**3
    assert host["PidsLimit"] and host["PidsLimit"] > 0
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert host["Privileged"] is False
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert list(container["NetworkSettings"]["Networks"]) == [f"{stack.name}-agents"]
    mounts = {m["Destination"]: m for m in container["Mounts"]}
    assert not [d for d in mounts if "docker.sock" in d], mounts
    task = container["Config"]["Labels"][TASK_LABEL]
    writable = [d for d, m in mounts.items() if m["RW"]]
    assert any(d.endswith(f"/workspaces/{task}") for d in writable), writable  # its worktree
    assert all(d.endswith(f"/{task}") for d in writable), writable  # and its own CLI config
    assert not any(k.startswith(("PREFECT_", "CONDUCTOR_API")) for k in container["Config"]["Env"])
    # Each container goes once its launch has ended.
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
    for sub_id in subs:  # each subtask's engine ran in the worker
        assert f"task {sub_id} (command)" in worker


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
        ["docker", "inspect", "--format",
         "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", f"{stack.name}-{service}-1"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return out.split()[0]


def _gateways(stack: Stack) -> list[str]:
    """The gateway addresses of the stack's networks and Docker's default bridge: where a
    container would find the host."""
    found = []
    for net in ("agents", "backend", "egress", "edge"):
        out = subprocess.run(
            ["docker", "network", "inspect", "--format",
             "{{range .IPAM.Config}}{{.Gateway}} {{end}}", f"{stack.name}-{net}"],
            capture_output=True, text=True,
        ).stdout  # fmt: skip
        found += out.split()
    return [*found, "172.17.0.1"]


PROBE = r"""
import json, os, socket, stat, urllib.error, urllib.request
SECRETS = [s[::-1].encode() for s in {secrets!r}]
PROXY = os.environ.get("HTTP_PROXY", "")
def tcp(host, port):
    try:
        socket.create_connection((host, port), timeout=2).close()
        return "open"
    except OSError as exc:
        return type(exc).__name__
def proxied(url):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({{"http": PROXY, "https": PROXY}}))
    try:
        return opener.open(url, timeout=10).status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError as exc:
        return str(exc)[:60]
def holds_secret(data):
    return any(secret in data for secret in SECRETS)
files = []
for root, dirs, names in os.walk("/"):
    if root == "/":  # the image's own files (built before any stack secret existed) and kernel views
        dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev", "usr", "opt")]
    for name in names:
        path = os.path.join(root, name)
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode) or os.path.getsize(path) > 50_000_000:
                continue
            with open(path, "rb") as fh:
                if holds_secret(fh.read()):
                    files.append(path)
        except OSError:
            continue
procs = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    for part in ("environ", "cmdline"):
        try:
            if holds_secret(open(f"/proc/{{pid}}/{{part}}", "rb").read()):
                procs.append(f"{{pid}}/{{part}}")
        except OSError:
            pass
sockets = [os.path.join(r, n) for base in ("/run", "/var/run", "/tmp") for r, _, ns in os.walk(base)
           for n in ns if stat.S_ISSOCK(os.lstat(os.path.join(r, n)).st_mode)]
print(json.dumps({{
    "uid": os.getuid(),
    "env": sorted(k for k in os.environ if k.startswith(("PREFECT", "CONDUCTOR_API", "DOCKER"))),
    "env_secret": holds_secret("\0".join(os.environ.values()).encode()),
    "files": files, "procs": procs, "sockets": sockets,
    "docker_sock": os.path.exists("/var/run/docker.sock"),
    "tcp": {{name: tcp(host, port) for name, host, port in {targets!r}}},
    "proxy": {{name: proxied(url) for name, url in {urls!r}}},
}}))
"""


def test_an_agent_finds_no_credential_and_reaches_only_the_model(
    stack: Stack, demo_repo: Path
) -> None:
    """A `kind: command` task runs where an agent runs and tries what a hostile agent would:
    the credential in its environment, in /proc, in any file; the Docker socket; the Prefect
    API, the database, Redis, nginx, the dashboard, the host's 0.0.0.0 services; other hosts
    through the egress proxy. It finds and reaches nothing but the model endpoint."""
    secrets_dir = stack.home / "docker" / stack.name / "secrets"
    secrets = [stack.prefect_auth.split(":", 1)[1]] + [
        (secrets_dir / name).read_text().strip()
        for name in ("postgres_password", "redis_password", "dashboard_password")
    ]
    listener = socket.socket()
    listener.bind(("0.0.0.0", 0))
    listener.listen()
    host_port = listener.getsockname()[1]
    host_ips = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    targets = [("model", "scripted-model", 8765), ("proxy", "egress-proxy", 8888)]
    for service, port in (("prefect-server", 4200), ("postgres", 5432), ("redis", 6379),
                          ("nginx", 8080), ("dashboard", 8501)):  # fmt: skip
        targets += [(f"{service}-by-name", service, port),
                    (f"{service}-by-ip", _service_ip(stack, service), port)]  # fmt: skip
    for ip in [*_gateways(stack), *host_ips[:2], "127.0.0.1"]:
        targets += [(f"host-{ip}", ip, host_port), (f"host-nginx-{ip}", ip, stack.opts.http_port)]
    urls = [
        ("model", "http://scripted-model:8765/health"),
        ("other-host", "http://example.com/"),
        ("other-host-https", "https://example.com/"),
        ("prefect-api", "http://prefect-server:4200/api/health"),
        ("host", f"http://{host_ips[0] if host_ips else '172.17.0.1'}:{host_port}/"),
    ]
    script = PROBE.format(secrets=[s[::-1] for s in secrets], targets=targets, urls=urls)
    try:
        result = stack.run_task(
            {"kind": "command", "title": "probe like an agent", "repo": str(demo_repo),
             "command": f"python3 - <<'EOF'\n{script}\nEOF", "timeout_seconds": 300},
            "probe",
        )  # fmt: skip
    finally:
        listener.close()
    assert result["status"] == "succeeded", result.get("error")
    out = json.loads(result["verify"]["output_tail"].strip().splitlines()[-1])
    assert out["uid"] == stack.agent_uid != 0
    assert out["env"] == [] and out["env_secret"] is False
    assert out["files"] == [] and out["procs"] == [], out
    assert out["sockets"] == [] and out["docker_sock"] is False
    tcp = out["tcp"]
    assert tcp.pop("model") == "open" and tcp.pop("proxy") == "open"
    assert not [name for name, how in tcp.items() if how == "open"], tcp
    proxy = out["proxy"]
    assert proxy["model"] == 200  # the model's host is on the allow-list
    assert proxy["other-host"] == 403 and proxy["prefect-api"] == 403 and proxy["host"] == 403
    assert "403" in str(proxy["other-host-https"])  # CONNECT refused too


def test_widening_job_variables_are_refused_and_only_the_worker_has_the_socket(
    stack: Stack, demo_repo: Path
) -> None:
    """Issue 14's escalation, replayed: without the credential the API answers 401; with it,
    a run (or a deployment) asking for a user, a writable root, the backend network, the
    Docker socket or a command is refused, naming the variable; no container of the stack but
    the worker ever has the socket."""
    deployment = stack.api("/api/deployments/name/conductor-task/run")
    spec = {"kind": "command", "title": "widen", "command": "id", "repo": str(demo_repo)}
    wide = {
        "user": "10001:111",
        "read_only": False,
        "networks": [f"{stack.name}-backend"],
        "volumes": ["/var/run/docker.sock:/var/run/docker.sock"],
        "command": "sh -c 'id > /tmp/owned'",
        "env": {"LD_PRELOAD": "/tmp/x.so"},
        "working_dir": "/",
    }
    path = f"/api/deployments/{deployment['id']}/create_flow_run"
    status, _ = stack.http(path, None, "POST", {"parameters": {"spec": spec}})
    assert status == 401  # what the agent would get, had it a route to the API at all
    for name, value in wide.items():
        body = {"parameters": {"spec": spec}, "job_variables": {name: value}}
        status, answer = stack.http(path, stack.prefect_auth, "POST", body)
        assert status == 422, (name, status, answer[:300])
        assert f"'{name}' was unexpected" in answer.decode(), answer[:300]
    # A deployment edited to carry one (the API stores it) can then start nothing: each of
    # its runs is refused the same way. Put back as `conductor up` registers it.
    dep_path = f"/api/deployments/{deployment['id']}"
    socket_volume = {"volumes": ["/var/run/docker.sock:/var/run/docker.sock"]}
    try:
        status, answer = stack.http(dep_path, stack.prefect_auth, "PATCH",
                                    {"job_variables": socket_volume})  # fmt: skip
        if status != 422:
            status, answer = stack.http(path, stack.prefect_auth, "POST",
                                        {"parameters": {"spec": spec}})  # fmt: skip
        assert status == 422 and b"'volumes' was unexpected" in answer, (status, answer[:300])
    finally:
        status, _ = stack.http(dep_path, stack.prefect_auth, "PATCH", {"job_variables": {}})
        assert status == 204
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={stack.name}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    inspected = json.loads(
        subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True).stdout
    )
    with_socket = [
        c["Name"].lstrip("/")
        for c in inspected
        if any("docker.sock" in m.get("Source", "") for m in c["Mounts"])
    ]
    assert with_socket == [f"{stack.name}-worker-1"]


def test_every_service_is_limited_and_holds_only_its_own_secrets(stack: Stack) -> None:
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={stack.name}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    inspected = json.loads(
        subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True).stdout
    )
    api_key = (stack.home / "docker" / stack.name / "secrets" / "anthropic_api_key").read_text()
    for c in inspected:
        name, host = c["Name"].lstrip("/"), c["HostConfig"]
        assert host["Memory"] > 0 and host["NanoCpus"] > 0, f"{name} has no memory/CPU limit"
        env = c["Config"]["Env"]
        assert not [e for e in env if e.startswith("ANTHROPIC_API_KEY=")], name
        assert api_key.strip() not in json.dumps(c), name
        key_mounted = any(m["Destination"].endswith("/anthropic_api_key") for m in c["Mounts"])
        assert key_mounted == name.endswith("-worker-1"), name
    names = {c["Name"].lstrip("/") for c in inspected}
    assert f"{stack.name}-init-volumes-1" in names
    # Redis answers only with its password.
    anonymous = stack.compose("exec", "-T", "redis", "redis-cli", "ping", check=False)
    assert "NOAUTH" in anonymous.stdout + anonymous.stderr


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
    task = {"kind": "command", "title": f"sleep {seconds}", "repo": str(demo_repo),
            "command": f"sleep {seconds} && echo slept", "timeout_seconds": 600}  # fmt: skip
    task_id = _submit(stack, task, name)
    run = stack.wait_state(task_id, 120, until={"RUNNING"})
    assert run["state"]["type"] == "RUNNING", run["state"]
    deadline = time.monotonic() + 60
    while not _task_containers(task_id) and time.monotonic() < deadline:
        time.sleep(0.2)
    return task_id, run


def _submit(stack: Stack, task: dict[str, Any], name: str) -> str:
    path = stack.home.parent / f"{name}.yaml"
    path.write_text(yaml.safe_dump(task))
    proc = stack.cli("run", str(path))
    assert proc.returncode == 0, proc.stderr
    task_id = next(w for w in proc.stderr.split() if w.startswith("t-"))
    stack.task_ids.append(task_id)
    return task_id


def _task_containers(task_id: str) -> list[str]:
    return subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={TASK_LABEL}={task_id}"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip


def test_a_killed_worker_reruns_tasks_with_retries_and_crashes_the_others(
    stack: Stack, demo_repo: Path
) -> None:
    """Kill the worker container while two tasks run (their engines die with it; their agent
    containers go on). When it comes back it removes those containers, runs again the task
    that has retries left, and ends the other Crashed saying the worker died."""
    again = _submit(stack, {"kind": "command", "title": "again", "repo": str(demo_repo),
                            "command": "sleep 60 && echo slept", "retries": 1}, "again")  # fmt: skip
    lost = _submit(stack, {"kind": "command", "title": "lost", "repo": str(demo_repo),
                           "command": "sleep 600"}, "lost")  # fmt: skip
    deadline = time.monotonic() + 300
    while not (_task_containers(again) and _task_containers(lost)):
        assert time.monotonic() < deadline, "the two agent containers never started"
        time.sleep(0.3)
    subprocess.run(["docker", "kill", f"{stack.name}-worker-1"], capture_output=True, check=True)
    subprocess.run(["docker", "start", f"{stack.name}-worker-1"], capture_output=True, check=True)
    state = stack.wait_state(lost, 180)["state"]
    assert state["type"] == "CRASHED", state
    assert "worker" in state["message"] and "died" in state["message"], state
    shown = stack.cli("tasks", "show", again, "--wait", "--json", timeout=300)
    doc = json.loads(shown.stdout)
    assert (doc["state"], doc["status"]) == ("Completed", "succeeded"), doc
    assert "slept" in doc["result"]["verify"]["output_tail"]
    assert _task_containers(lost) == [] and _task_containers(again) == []


def test_switching_between_a_real_model_and_the_offline_one_with_up(
    stack: Stack, demo_repo: Path
) -> None:
    """`up` without --offline-model on a running offline stack, then with it again: both
    succeed, the scripted model goes and comes back, the proxy allows the model's host, and a
    task runs after the switch back."""
    real = stack.cli("up", "--tier", "docker", "--json", timeout=900)
    assert real.returncode == 0, real.stderr[-3000:]
    services = {d["name"]: d["running"] for d in json.loads(real.stdout)["daemons"]}
    assert "scripted-model" not in services and services["egress-proxy"], services
    proxy_log = stack.compose("logs", "--no-color", "egress-proxy").stdout
    assert "agents may reach: api.anthropic.com" in proxy_log
    back = stack.cli("up", "--tier", "docker", "--offline-model", "--json", timeout=900)
    assert back.returncode == 0, back.stderr[-3000:]
    services = {d["name"]: d["running"] for d in json.loads(back.stdout)["daemons"]}
    assert services.get("scripted-model") is True, services
    result = stack.run_task(
        {"kind": "command", "title": "after the switch", "repo": str(demo_repo),
         "command": "python3 -c \"import socket; socket.create_connection(('scripted-model', 8765), 3); print('model ok')\""},
        "after-switch",
    )  # fmt: skip
    assert result["status"] == "succeeded", result.get("error")
    assert "model ok" in result["verify"]["output_tail"]


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


def test_backup_then_everything_deleted_then_restore(
    stack: Stack, demo_repo: Path, tmp_path: Path
) -> None:
    """`conductor backup --tier docker` (pg_dump + the results folder), `down --volumes` (the
    database, the data folder and the secrets gone), `up` on an empty database, `restore`: the
    same tasks with the same outcomes, results and diffs."""
    made = stack.run_task(
        {"kind": "command", "title": "backup probe", "command": "echo backed up > saved.txt",
         "repo": str(demo_repo)},
        "backup-probe",
    )  # fmt: skip
    assert made["status"] == "succeeded", made.get("error")
    first = made["task_id"]

    def listed() -> dict[str, tuple[str, str]]:
        rows = json.loads(stack.cli("tasks", "list", "--json").stdout)
        return {r["task_id"]: (r["state"], r["status"]) for r in rows}

    before = listed()
    assert first in before
    diff_before = stack.cli("tasks", "diff", first)
    folder = tmp_path / "backup"
    backup = stack.cli("backup", "--tier", "docker", "--to", str(folder), "--json")
    assert backup.returncode == 0, backup.stderr
    assert (folder / "prefect.sql").stat().st_size > 0
    assert (folder / "results.tar.gz").stat().st_size > 0
    down = stack.cli("down", "--tier", "docker", "--volumes")
    assert down.returncode == 0, down.stderr
    up = stack.cli("up", "--tier", "docker", "--offline-model", "--json", timeout=900)
    assert up.returncode == 0, up.stderr
    assert first not in listed(), "the new stack should start empty"
    restore = stack.cli("restore", str(folder), "--tier", "docker")
    assert restore.returncode == 0, restore.stderr
    assert listed() == before
    shown = json.loads(stack.cli("tasks", "show", first, "--json").stdout)
    assert shown["branch"] == f"conductor/{first}" and shown["result"] is not None
    assert stack.cli("tasks", "diff", first).stdout == diff_before.stdout
