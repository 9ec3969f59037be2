"""``conductor metrics serve|show``: the Prometheus exporter, and the same numbers printed."""

from __future__ import annotations

import typer

from claude_conductor.cli import _common
from claude_conductor.errors import InputError

__all__ = ["register"]

metrics_app = typer.Typer(
    help="Fleet metrics for Prometheus (queue depth, agents, outcomes, cost).",
    no_args_is_help=True,
)

_BUDGET_ENV = "CONDUCTOR_METRICS_COST_BUDGET_USD_PER_HOUR"


@metrics_app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Listen on this address."),
    port: int = typer.Option(9464, "--port", min=0, max=65535, help="Listen on this port."),
    ttl_seconds: float = typer.Option(
        5.0, "--ttl-seconds", help="Read the Prefect API at most this often, however often scraped."
    ),
    cost_budget: float | None = typer.Option(
        None,
        "--cost-budget-usd-per-hour",
        envvar=_BUDGET_ENV,
        help="Export this budget as conductor_cost_budget_usd_per_hour (the cost alert uses it).",
    ),
) -> int:
    """Serve /metrics (and /healthz) for Prometheus until interrupted."""
    from claude_conductor.logging_json import configure_logging
    from claude_conductor.metrics.exporter import serve as run_server

    if ttl_seconds < 0:
        raise InputError(
            f"--ttl-seconds {ttl_seconds!r}: give 0 or more seconds", field="ttl_seconds"
        )
    if cost_budget is not None and cost_budget <= 0:
        raise InputError(
            f"--cost-budget-usd-per-hour {cost_budget!r}: give a positive amount of USD "
            f"(or unset {_BUDGET_ENV})",
            field="cost_budget_usd_per_hour",
            value=cost_budget,
        )
    settings = _common.settings()
    configure_logging(settings)

    def ready(url: str) -> None:
        _common.err_console.print(f"Conductor metrics on {url} (Ctrl-C to stop)", highlight=False)

    try:
        run_server(
            settings,
            host=host,
            port=port,
            ttl_seconds=ttl_seconds,
            cost_budget_usd_per_hour=cost_budget,
            ready=ready,
        )
    except OSError as exc:
        raise InputError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port",
            field="port",
            value=port,
        ) from exc
    return 0


@metrics_app.command("show")
def show(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
    gauges_only: bool = typer.Option(
        False, "--gauges-only", help="Skip the history (counters): a few cheap queries."
    ),
) -> int:
    """Print the numbers the exporter serves, read once."""
    from claude_conductor.client.connection import run_sync
    from claude_conductor.metrics import snapshot

    settings = _common.settings()
    snap = run_sync(snapshot(settings, history=not gauges_only))
    if as_json:
        _common.print_json(snap.model_dump(mode="json"))
        return 0 if snap.api_up else 1
    out = _common.console
    if not snap.api_up:
        out.print(f"Prefect API {snap.api_url}: unreachable ({snap.error})")
        return 1
    out.print(f"Prefect API {snap.api_url}: up")
    for pool in snap.pools:
        queued = ", ".join(f"{k} {v}" for k, v in pool.queued.items())
        out.print(
            f"pool {pool.pool} ({pool.name}): {pool.busy}/{pool.slots} slots busy, "
            f"{pool.running} running, queued {pool.queue_depth} ({queued}), "
            f"{pool.workers_online} worker(s) online"
        )
    out.print(f"tasks: {snap.submitted} submitted, {snap.started} started")
    for row in snap.tasks:
        out.print(f"  {row.kind} {row.status}: {row.count}")
    if snap.exits:
        out.print("agent exits: " + ", ".join(f"{e.reason} {e.count}" for e in snap.exits))
    total = sum(c.usd for c in snap.cost)
    out.print(f"cost: ${total:.4f}")
    return 0


def register(app: typer.Typer) -> None:
    app.add_typer(metrics_app, name="metrics")
