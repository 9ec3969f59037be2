"""A real standalone stack (Prefect server, pools, deployments, workers) in a temp Conductor
home on a free port, shared by every test of a session that asks for ``conductor_stack``.

Register globally with ``pytest_plugins = ["stack_fixtures"]`` in tests/conftest.py; until
then tests/tiers/conftest.py re-exports the fixture for tests/tiers.

The workers get ``tests/tiers/stackflows`` on their PYTHONPATH, so test-only flows there run
through the real worker exactly like Conductor's own (module-path entrypoints).
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from claude_conductor.client.deployments import register_deployments
from claude_conductor.settings import ConductorSettings, ServerSettings, WorkerSettings
from claude_conductor.tiers import standalone
from claude_conductor.tiers.status import StackInfo
from claude_conductor.work_pools.deployments import DeploymentDef

STACKFLOWS = Path(__file__).parent / "tiers" / "stackflows"
SLEEPY = DeploymentDef(
    flow_name="conductor-stack-test-sleep",
    name="run",
    entrypoint="conductor_stack_test_flows.sleepy",
    pool="agents",
    description="Test only: sleeps, and records when it ran.",
    tags=("conductor-test",),
    typed_spec=False,
)
CHATTY = DeploymentDef(
    flow_name="conductor-stack-test-chatty",
    name="run",
    entrypoint="conductor_stack_test_flows.chatty",
    pool="agents",
    description="Test only: logs lines and ends right after the last one.",
    tags=("conductor-test",),
    typed_spec=False,
)
VERSIONED = DeploymentDef(
    flow_name="conductor-stack-test-versioned",
    name="run",
    entrypoint="conductor_stack_versioned.versioned",
    pool="agents",
    description="Test only: says which version of its module ran (preloaded by the forkserver).",
    tags=("conductor-test",),
    typed_spec=False,
)
VERSIONED_SOURCE = """from typing import Any

from prefect import flow
from prefect.states import Completed

VERSION = {version}


@flow(name="conductor-stack-test-versioned", persist_result=False)
async def versioned(spec: dict[str, Any]) -> Any:
    return Completed(message=f"version {{VERSION}}")
"""
WHEELED = DeploymentDef(
    flow_name="conductor-stack-test-wheeled",
    name="run",
    entrypoint="conductor_stack_wheeled.wheeled",
    pool="agents",
    description="Test only: says which version of its installed package ran (preloaded).",
    tags=("conductor-test",),
)
WHEELED_SOURCE = """from typing import Any

from prefect import flow
from prefect.states import Completed

VERSION = {version}


@flow(name="conductor-stack-test-wheeled", persist_result=False)
async def wheeled(spec: dict[str, Any]) -> Any:
    return Completed(message=f"installed version {{VERSION}}")
"""
PROBE_VALUE = "passed-through"


def build_wheel(folder: Path, version: int) -> Path:
    """A wheel of the one-module package ``conductor_stack_wheeled`` at ``version``, zipped by
    hand (no build backend, nothing to download)."""
    name = "conductor_stack_wheeled"
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": WHEELED_SOURCE.format(version=version),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: conductor-tests\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = hashlib.sha256(text.encode()).digest()
        encoded = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        record.append(f"{path},sha256={encoded},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    stamp = time.localtime()[:6]
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(zipfile.ZipInfo(path, date_time=stamp), text)
    return wheel


def pip_install(target: Path, wheel: Path) -> None:
    """``pip install --upgrade --target`` of a local wheel: a real (re)install, offline."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
         "--upgrade", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )  # fmt: skip


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (never 4200: a user's stack may be running there)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port != 4200:
            return port


def stack_env(*code_dirs: Path) -> dict[str, str]:
    """The environment the stack's processes inherit: ours, plus the test flows' directory
    (and ``code_dirs``, for code a test changes or reinstalls) and an ANTHROPIC_* probe that
    flow runs must see."""
    # Another test's settings (CONDUCTOR_*, PREFECT_*) must not leak into the stack.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDUCTOR_", "PREFECT_"))}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(STACKFLOWS), *map(str, code_dirs), env.get("PYTHONPATH", "")) if p
    )
    env["ANTHROPIC_STACK_TEST_PROBE"] = PROBE_VALUE
    # A stray Prefect API in the caller's environment must not leak into the stack.
    env["PREFECT_API_URL"] = "http://127.0.0.1:9/api"
    return env


@dataclass
class Stack:
    settings: ConductorSettings
    info: StackInfo
    env: dict[str, str]
    code_dir: Path | None = None
    site_dir: Path | None = None

    @property
    def home(self) -> Path:
        return self.settings.home


def make_settings(
    home: Path, port: int, agents: int = 2, preload: tuple[str, ...] = ()
) -> ConductorSettings:
    return ConductorSettings(
        home=home,
        server=ServerSettings(host="127.0.0.1", port=port),
        worker=WorkerSettings(agents=agents, query_seconds=0.5, preload=list(preload)),
        dashboard={"enabled": False},
    )


@pytest.fixture(scope="session")
def conductor_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """``up`` once for the session (agents=2, dashboard off); ``down`` at the end."""
    home = tmp_path_factory.mktemp("conductor-home")
    code_dir = tmp_path_factory.mktemp("stack-code")
    (code_dir / "conductor_stack_versioned.py").write_text(VERSIONED_SOURCE.format(version=1))
    site_dir = tmp_path_factory.mktemp("stack-site")  # packages installed with pip
    pip_install(site_dir, build_wheel(tmp_path_factory.mktemp("wheels"), 1))
    preload = ("conductor_stack_test_flows", "conductor_stack_versioned", "conductor_stack_wheeled")
    settings = make_settings(home, free_port(), preload=preload)
    env = stack_env(code_dir, site_dir)
    try:
        info = standalone.up(settings, base_env=env, timeout_seconds=180)
        register_deployments(settings, (SLEEPY, CHATTY, VERSIONED, WHEELED))
        yield Stack(settings=settings, info=info, env=env, code_dir=code_dir, site_dir=site_dir)
    finally:
        standalone.down(settings, grace_seconds=5)
