"""The submit-and-observe side of Prefect, shared by the CLI, the dashboard and the MCP server:
``connection`` (connect, health, the sync bridge) and ``tasks`` (submit, list, read, wait,
cancel, retry, logs)."""
