"""How to start the dashboard: the ``streamlit run`` argv and its environment, built by pure
functions so the CLI runs it in the foreground and the standalone tier can daemonize it.
(Here, below the CLI and the dashboard, so both and the tiers may use it;
``dashboard.launch`` re-exports it.)

Without a dashboard password the dashboard listens on 127.0.0.1 only, whatever host is set.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from claude_conductor.errors import InputError
from claude_conductor.settings import ConductorSettings

__all__ = [
    "LOOPBACK",
    "app_path",
    "bind_address",
    "dashboard_argv",
    "dashboard_env",
    "dashboard_url",
    "is_loopback",
]

LOOPBACK = "127.0.0.1"


def app_path() -> Path:
    """The Streamlit entry script."""
    return Path(__file__).resolve().parents[1] / "dashboard" / "app.py"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_address(settings: ConductorSettings, host: str | None = None) -> str:
    """Where to listen: the configured (or given) host when a password is set, else 127.0.0.1.

    An explicitly given non-loopback ``host`` without a password is refused (InputError): the
    dashboard can submit and cancel work, so it is never open to the network unprotected.
    """
    wanted = host or settings.dashboard.host
    if settings.dashboard.password is not None or is_loopback(wanted):
        return wanted
    if host is not None:
        raise InputError(
            f"the dashboard has no password, so it listens on {LOOPBACK} only, not {host!r}; "
            "set CONDUCTOR_DASHBOARD_PASSWORD (or dashboard.password) to serve other hosts",
            field="dashboard.host",
            value=host,
        )
    return LOOPBACK


def dashboard_url(settings: ConductorSettings, host: str | None = None) -> str:
    address = bind_address(settings, host)
    shown = LOOPBACK if address in {"0.0.0.0", "::"} else address
    return f"http://{shown}:{settings.dashboard.port}"


def dashboard_argv(
    settings: ConductorSettings,
    *,
    host: str | None = None,
    port: int | None = None,
    python: str | None = None,
) -> list[str]:
    """``python -m streamlit run .../app.py --server.address ... --server.port ...``."""
    return [
        python or sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app_path()),
        "--server.address",
        bind_address(settings, host),
        "--server.port",
        str(port or settings.dashboard.port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--client.toolbarMode",
        "viewer",
    ]


def dashboard_env(
    settings: ConductorSettings, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment the dashboard process needs to see the same settings as the caller
    (including ones given in code, not only in the environment or config file)."""
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "CONDUCTOR_HOME": str(settings.home),
            "CONDUCTOR_TIER": settings.tier,
            "CONDUCTOR_API_URL": settings.server.url,
            "CONDUCTOR_WORKER__POOL": settings.worker.pool,
            "CONDUCTOR_AGENTS": str(settings.worker.agents),
            "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if settings.server.auth_string is not None:
        env["CONDUCTOR_API_AUTH_STRING"] = settings.server.auth_string.get_secret_value()
    if settings.dashboard.password is not None:
        env["CONDUCTOR_DASHBOARD_PASSWORD"] = settings.dashboard.password.get_secret_value()
    else:
        env.pop("CONDUCTOR_DASHBOARD_PASSWORD", None)
    return env
