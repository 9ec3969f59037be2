"""The standalone tier's optional daemons: the dashboard, and the scripted model the offline
demo points agents at (a stand-in for the Messages API, not a model)."""

from __future__ import annotations

import importlib.util
import logging
import socket
import sys
from collections.abc import Mapping

from claude_conductor.errors import ConductorError, InputError
from claude_conductor.settings import ConductorSettings
from claude_conductor.system import processes
from claude_conductor.tiers.standalone import launch

__all__ = [
    "DASHBOARD",
    "SCRIPTED_MODEL",
    "SCRIPTED_MODEL_KEY",
    "dashboard_url",
    "ensure_scripted_model",
    "has_model_credentials",
    "model_env",
    "scripted_model_url",
    "start_dashboard",
    "uses_scripted_model",
    "wait_dashboard",
]

logger = logging.getLogger(__name__)

DASHBOARD = "dashboard"
SCRIPTED_MODEL = "scripted-model"
#: Any key will do for the scripted model; this one says what it is in every log.
SCRIPTED_MODEL_KEY = "sk-scripted-offline"
_MODEL_VARS = ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- scripted model ------------------------------------------------------------------------


def scripted_model_url(settings: ConductorSettings) -> str | None:
    """The URL of the running scripted model daemon, or None."""
    daemon = processes.read_daemon(settings, SCRIPTED_MODEL)
    if daemon is None or not daemon.alive or "--port" not in daemon.argv:
        return None
    return f"http://127.0.0.1:{daemon.argv[daemon.argv.index('--port') + 1]}"


def ensure_scripted_model(
    settings: ConductorSettings, base_env: Mapping[str, str], timeout_seconds: float
) -> tuple[str, bool]:
    """Start the scripted model unless it runs, and wait until it answers; returns
    ``(url, started)``."""
    url = scripted_model_url(settings)
    if url is not None:
        return url, False
    port = _free_port()
    argv = [
        sys.executable, "-m", "claude_conductor.demo.scripted_model",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    env = {**base_env, launch.STACK_MARKER: str(settings.home)}
    daemon = processes.start_daemon(settings, SCRIPTED_MODEL, argv, env=env)
    url = f"http://127.0.0.1:{port}"
    if not processes.wait_for_health(f"{url}/health", timeout_seconds, alive=lambda: daemon.alive):
        processes.stop_daemon(settings, SCRIPTED_MODEL, grace_seconds=2)
        raise processes.DaemonError(
            f"the scripted model did not answer at {url}",
            name=SCRIPTED_MODEL,
            log_tail=processes.log_tail(daemon.log_path),
        )
    return url, True


def model_env(url: str) -> dict[str, str]:
    """Worker variables that send every agent to the scripted model at ``url``."""
    return {"ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": SCRIPTED_MODEL_KEY}


def uses_scripted_model(pid: int) -> bool:
    """Whether the process ``pid`` (a worker) was started pointing at a scripted model."""
    return processes.read_environ(pid).get("ANTHROPIC_API_KEY") == SCRIPTED_MODEL_KEY


def has_model_credentials(env: Mapping[str, str]) -> bool:
    return (
        any(env.get(k) for k in _MODEL_VARS[1:])
        and env.get("ANTHROPIC_API_KEY") != SCRIPTED_MODEL_KEY
    )


# -- dashboard -----------------------------------------------------------------------------


def dashboard_url(settings: ConductorSettings) -> str | None:
    """The dashboard's URL when its daemon runs."""
    if not processes.is_running(settings, DASHBOARD):
        return None
    return _dashboard_url(settings)


def start_dashboard(
    settings: ConductorSettings, base_env: Mapping[str, str], *, required: bool
) -> processes.Daemon | None:
    """Start the dashboard unless it runs (then None; see ``wait_dashboard``). Without
    Streamlit installed it is skipped, or refused when ``required``."""
    if processes.is_running(settings, DASHBOARD):
        return None
    if importlib.util.find_spec("streamlit") is None:
        if required:
            raise InputError(
                "the dashboard needs Streamlit: pip install 'claude-conductor[dashboard]' "
                "(or set dashboard.enabled: false)",
                field="dashboard.enabled",
            )
        logger.info("Streamlit is not installed: no dashboard")
        return None
    from claude_conductor.tiers.dashboard_launch import dashboard_argv, dashboard_env

    url = _dashboard_url(settings)
    host = url.split("//", 1)[1].rsplit(":", 1)[0]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        if sock.connect_ex((host, settings.dashboard.port)) == 0:
            raise ConductorError(
                f"port {settings.dashboard.port} is in use by a process Conductor did not "
                "start; set CONDUCTOR_DASHBOARD__PORT, or dashboard.enabled: false"
            )
    env = {**dashboard_env(settings, base_env), launch.STACK_MARKER: str(settings.home)}
    return processes.start_daemon(settings, DASHBOARD, dashboard_argv(settings), env=env)


def wait_dashboard(
    settings: ConductorSettings, daemon: processes.Daemon, timeout_seconds: float
) -> None:
    """Until the started dashboard answers its health check (DaemonError, and stopped, if not)."""
    health = f"{_dashboard_url(settings)}/_stcore/health"
    if not processes.wait_for_health(health, timeout_seconds, alive=lambda: daemon.alive):
        processes.stop_daemon(settings, DASHBOARD, grace_seconds=2)
        raise processes.DaemonError(
            f"the dashboard did not become healthy at {health}",
            name=DASHBOARD,
            log_tail=processes.log_tail(daemon.log_path),
        )


def _dashboard_url(settings: ConductorSettings) -> str:
    from claude_conductor.tiers.dashboard_launch import dashboard_url as url_of

    return url_of(settings)
