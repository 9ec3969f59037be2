"""Re-export of ``claude_conductor.tiers.dashboard_launch`` (moved there so the CLI and the
tiers can start the dashboard without importing the dashboard package)."""

from claude_conductor.tiers.dashboard_launch import (
    LOOPBACK,
    app_path,
    bind_address,
    dashboard_argv,
    dashboard_env,
    dashboard_url,
    is_loopback,
)

__all__ = [
    "LOOPBACK",
    "app_path",
    "bind_address",
    "dashboard_argv",
    "dashboard_env",
    "dashboard_url",
    "is_loopback",
]
