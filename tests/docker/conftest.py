"""The docker tier's stack fixture (see docker_stack_fixtures.py)."""

from docker_stack_fixtures import demo_repo, stack

__all__ = ["demo_repo", "stack"]
