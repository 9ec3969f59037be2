"""Conductor's fleet metrics: one ``snapshot(settings) -> FleetSnapshot`` read from the
Prefect API and the task results, and a Prometheus exporter over it
(``conductor metrics serve``). See ``deployments/monitoring/`` for rules and dashboards."""

from claude_conductor.metrics.reader import FleetReader, snapshot
from claude_conductor.metrics.snapshot import FleetSnapshot, PoolGauges

__all__ = ["FleetReader", "FleetSnapshot", "PoolGauges", "snapshot"]
