"""The surface tests' shared stack (see surface_stack.py)."""

from surface_stack import surface_stack

__all__ = ["surface_stack"]
