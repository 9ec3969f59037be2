"""``conductor deploy kubernetes``: render or apply an overlay of ``deployments/kubernetes``.

conductor deploy kubernetes --overlay dev --render > stack.yaml   # no cluster needed
conductor deploy kubernetes --overlay prod                        # kubectl apply -k
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from claude_conductor.cli import _common

__all__ = ["register"]

deploy_app = typer.Typer(
    name="deploy",
    help="Deploy Conductor to a cluster (the Kubernetes tier).",
    no_args_is_help=True,
)


@deploy_app.command("kubernetes")
def kubernetes(
    overlay: str = typer.Option(
        "dev", "--overlay", "-o", help="Which overlay: dev or prod (deployments/kubernetes)."
    ),
    render_only: bool = typer.Option(
        False, "--render", help="Print the YAML that would be applied, and exit."
    ),
    context: str | None = typer.Option(None, "--context", help="kubeconfig context to use."),
    manifests: Path | None = typer.Option(
        None,
        "--manifests",
        help="A checkout holding deployments/kubernetes (default: this installation's).",
    ),
) -> int:
    """Render (--render) or apply an overlay with kubectl."""
    from claude_conductor.tiers.kubernetes import KubernetesTier

    tier = KubernetesTier(overlay=overlay, context=context, root=manifests)
    if render_only:
        sys.stdout.write(tier.render())
        sys.stdout.flush()
        return 0
    info = tier.up(_common.settings())
    for line in info.started:
        _common.console.print(line, highlight=False)
    _common.console.print(
        f"applied overlay {overlay}; the API is behind the Ingress (set "
        "CONDUCTOR_SERVER__API_URL to https://HOST/api and CONDUCTOR_SERVER__AUTH_STRING)",
        highlight=False,
    )
    return 0


def register(app: typer.Typer) -> None:
    app.add_typer(deploy_app, name="deploy")
