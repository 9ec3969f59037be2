"""Fixtures of the tier tests: ``conductor_stack`` comes from tests/stack_fixtures.py, registered
as a plugin in tests/conftest.py."""
