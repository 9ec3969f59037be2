"""Claude Conductor: run many Claude Code agents in parallel, orchestrated by Prefect 3."""

__version__ = "0.1.0"
__all__ = ["__version__"]
