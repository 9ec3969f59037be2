"""Re-export of ``claude_conductor.tiers.dashboard_launch`` (moved there so the CLI and the
tiers can start the dashboard without importing the dashboard package)."""

from claude_conductor.tiers import dashboard_launch as _moved
from claude_conductor.tiers.dashboard_launch import *  # noqa: F403

__all__ = list(_moved.__all__)
