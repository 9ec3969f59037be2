"""The standalone tier: everything on this machine (Prefect server on SQLite, process workers,
the dashboard), started and stopped by PID."""

from claude_conductor.tiers.standalone.stack import down, scale_agents, status, up

__all__ = ["down", "scale_agents", "status", "up"]
