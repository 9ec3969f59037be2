"""One docker-tier stack per test module (fixtures `stack` and `demo_repo`), on a real Docker engine, with the scripted model.

The stack gets a unique name (``ct-<hex>``: its compose project, networks and volumes), a free
port on 127.0.0.1, its own Conductor home and repositories folder in a temporary directory. It
is brought up the way a user does it (config exported from a standalone setup, imported, then
``up --tier docker``) and brought down with its volumes at the end. Nothing else on the engine
is touched: every docker command names this stack's project, containers or label.

Without a Docker engine the tests skip and say how to get one; under CI (``CI`` set) they fail
instead, because CI installs the engine (``.ci/docker-setup.sh``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from claude_conductor.agents.docker_placement import STACK_LABEL
from claude_conductor.demo.project import make_demo_repo
from claude_conductor.flows.identity import task_tag
from claude_conductor.settings import ConductorSettings, load_settings
from claude_conductor.tiers import docker
from claude_conductor.tiers.docker.files import DockerOptions, docker_options, stack_files

HOW_TO_GET_DOCKER = (
    "run `bash .ci/docker-setup.sh` as root: it installs Debian's docker.io and Compose v2, "
    "starts dockerd, makes a base image with debootstrap (no registry needed) and builds "
    "Conductor's images"
)
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _ok(*argv: str) -> bool:
    try:
        return subprocess.run(list(argv), capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def docker_missing() -> str | None:
    """Why the docker tier cannot run here, or None when it can."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    if not _ok("docker", "info"):
        return "no Docker engine answers `docker info`"
    if not _ok("docker", "compose", "version"):
        return "Docker Compose v2 (`docker compose`) is missing"
    opts = _images()
    for image in (opts.image, opts.infra_image):
        if not _ok("docker", "image", "inspect", image):
            return f"image {image} is not built"
    return None


def _images() -> DockerOptions:
    """The images to test: CONDUCTOR_DOCKER__IMAGE / __INFRA_IMAGE when set (a branch's own
    build on a shared engine), else the defaults."""
    return docker_options(
        {k: v for k, v in os.environ.items() if k.endswith(("__IMAGE", "__INFRA_IMAGE"))}
    )


def require_docker() -> None:
    reason = docker_missing()
    if reason is None:
        return
    message = f"{reason}: {HOW_TO_GET_DOCKER}"
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the docker tests, but {message}")
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Stack:
    """A running docker-tier stack and ways to poke it."""

    name: str
    home: Path
    repos: Path
    opts: DockerOptions
    settings: ConductorSettings
    env: dict[str, str]
    cold_start_seconds: float
    prefect_auth: str
    dashboard_auth: str
    agent_uid: int
    up_info: dict[str, Any]
    task_ids: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.opts.http_port}"

    def cli(
        self, *args: str, timeout: float = 600, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """The `conductor` command as a user runs it, pointed at this stack by `up`."""
        return subprocess.run(
            [sys.executable, "-m", "claude_conductor.cli.main", *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def run_task(self, task: dict[str, Any], name: str) -> dict[str, Any]:
        """Write a task file, `conductor run FILE --wait --json`, return the result."""
        path = self.home.parent / f"{name}.yaml"
        path.write_text(yaml.safe_dump(task), encoding="utf-8")
        proc = self.cli("run", str(path), "--wait", "--json")
        assert proc.stdout.strip(), f"no result from conductor run:\n{proc.stderr}"
        result: dict[str, Any] = json.loads(proc.stdout)
        self.task_ids.append(result["task_id"])
        return result

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return docker.compose(
            self.settings, *args, opts=self.opts, timeout_seconds=300, check=check
        )

    def exec_in(self, service: str, *argv: str) -> str:
        """Run a command in a service container, through the image's entrypoint (so the
        service's secrets are loaded as they are for the service itself)."""
        proc = self.compose("exec", "-T", service, "conductor-entrypoint", *argv)
        return proc.stdout

    def agent_containers(self) -> list[str]:
        return docker.agent_containers(self.opts)

    def http(self, path: str, auth: str | None = None, method: str = "GET",
             body: Any = None) -> tuple[int, bytes]:  # fmt: skip
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if auth is not None:
            request.add_header("Authorization", "Basic " + b64encode(auth.encode()).decode())
        try:
            with _NO_PROXY.open(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def api(self, path: str, body: Any = None) -> Any:
        status, data = self.http(
            path, self.prefect_auth, "POST" if body is not None else "GET", body
        )
        assert status == 200, f"{path}: HTTP {status} {data[:300]!r}"
        return json.loads(data)

    def flow_run(self, task_id: str) -> dict[str, Any]:
        runs = self.api(  # a task's run carries the tag task:<id> (flows/identity.py)
            "/api/flow_runs/filter",
            {"flow_runs": {"tags": {"all_": [task_tag(task_id)]}}, "limit": 1},
        )
        assert runs, f"no flow run of task {task_id} in the Prefect API"
        run: dict[str, Any] = runs[0]
        return run

    def wait_state(
        self, task_id: str, timeout_seconds: float, *, until: set[str] | None = None
    ) -> dict[str, Any]:
        """Poll the run until its state type is in ``until`` (default: any final one) or the
        timeout; returns the run as last read."""
        wanted = until or {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
        deadline = time.monotonic() + timeout_seconds
        while True:
            run = self.flow_run(task_id)
            if (run.get("state") or {}).get("type") in wanted or time.monotonic() > deadline:
                return run
            time.sleep(0.5)


def _container_uid() -> int:
    return os.getuid() or 10001


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_docker()
    root = tmp_path_factory.mktemp("docker-tier")
    name = f"ct-{secrets.token_hex(3)}"
    home, standalone_home, repos = root / "home", root / "standalone", root / "repos"
    for folder in (home, standalone_home, repos):
        folder.mkdir()
    uid = _container_uid()
    os.chown(repos, uid, uid)
    port = _free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CONDUCTOR_", "PREFECT_", "ANTHROPIC_"))
    }
    images = _images()
    env.update(
        {
            "CONDUCTOR_HOME": str(home),
            "CONDUCTOR_DOCKER__IMAGE": images.image,
            "CONDUCTOR_DOCKER__INFRA_IMAGE": images.infra_image,
            "CONDUCTOR_DOCKER__STACK": name,
            "CONDUCTOR_DOCKER__HTTP_PORT": str(port),
            "CONDUCTOR_DOCKER__REPOS_DIR": str(repos),
            "NO_PROXY": "127.0.0.1,localhost",
        }
    )

    def cli(home_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "claude_conductor.cli.main", *args],
            env={**env, "CONDUCTOR_HOME": str(home_dir)},
            capture_output=True,
            text=True,
            timeout=900,
        )

    # The setup a user moves from standalone: exported there, imported here.
    (standalone_home / "config.yaml").write_text(
        yaml.safe_dump({"worker": {"agents": 2}, "agent": {"inactivity_timeout_seconds": 123}})
    )
    exported = cli(standalone_home, "config", "export")
    assert exported.returncode == 0, exported.stderr
    (root / "conductor.yaml").write_text(exported.stdout)
    imported = cli(home, "config", "import", str(root / "conductor.yaml"))
    assert imported.returncode == 0, imported.stderr

    opts = DockerOptions(
        stack=name,
        http_port=port,
        repos_dir=repos,
        image=images.image,
        infra_image=images.infra_image,
    )
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith(("CONDUCTOR_", "ANTHROPIC_"))]:
            mp.delenv(key)
        mp.setenv("CONDUCTOR_HOME", str(home))
        settings = load_settings()
        started = time.monotonic()
        up = cli(home, "up", "--tier", "docker", "--offline-model", "--json")
        cold = time.monotonic() - started
        if up.returncode != 0:
            _logs(settings, opts)
            docker.down(settings, remove_volumes=True, opts=opts)
            pytest.fail(f"conductor up --tier docker failed:\n{up.stderr[-4000:]}")
        files = stack_files(settings, opts)
        handle = Stack(
            name=name,
            home=home,
            repos=repos,
            opts=opts,
            settings=settings,
            env=env,
            cold_start_seconds=cold,
            prefect_auth=(files.secrets_dir / "prefect_auth").read_text().strip(),
            dashboard_auth="conductor:"
            + (files.secrets_dir / "dashboard_password").read_text().strip(),
            agent_uid=uid,
            up_info=json.loads(up.stdout),
        )
        try:
            yield handle
        finally:
            down = cli(home, "down", "--tier", "docker", "--volumes")
            if down.returncode != 0:
                docker.down(settings, remove_volumes=True, opts=opts)
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={name}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    left += subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={STACK_LABEL}={name}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    volumes = subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter", f"name={name}-"],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert not left, f"containers of stack {name} left behind: {left}"
    assert not volumes, f"volumes of stack {name} left behind: {volumes}"
    assert down.returncode == 0, down.stderr
    # `down --volumes` also deletes the host-side secrets (API key, passwords) and the data.
    assert not files.secrets_dir.exists(), list(files.secrets_dir.iterdir())
    assert not files.folder.exists()


def _logs(settings: ConductorSettings, opts: DockerOptions) -> None:
    proc = docker.compose(settings, "logs", "--tail", "40", opts=opts, check=False)
    sys.stderr.write(proc.stdout[-20000:])


@pytest.fixture(scope="module")
def demo_repo(stack: Stack) -> Path:
    """The demo project in the stack's repositories folder, owned by the agents' uid."""
    repo = make_demo_repo(stack.repos / "demo")
    subprocess.run(["chown", "-R", f"{stack.agent_uid}:{stack.agent_uid}", str(repo)], check=True)
    return repo
