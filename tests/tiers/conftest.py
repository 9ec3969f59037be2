"""Fixtures of the tier tests. ``conductor_stack`` lives in tests/stack_fixtures.py (shared);
it is re-exported here until tests/conftest.py registers that module as a plugin."""

from __future__ import annotations

from stack_fixtures import conductor_stack

__all__ = ["conductor_stack"]
