"""The docker tier: one image for every role, run by Docker Compose."""

from claude_conductor.tiers.docker.stack import (
    agent_containers,
    compose,
    down,
    scale_agents,
    status,
    up,
)

__all__ = ["agent_containers", "compose", "down", "scale_agents", "status", "up"]
