"""``KubernetesTier``: the Tier protocol for a cluster. ``up`` applies an overlay of
``deployments/kubernetes`` with ``kubectl apply -k`` (when kubectl and a cluster are there;
otherwise one error saying which is missing), ``down`` deletes it, ``status`` and
``scale_agents`` talk to the cluster's Prefect API (``CONDUCTOR_SERVER__API_URL``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from claude_conductor.client.connection import conductor_client, run_sync
from claude_conductor.client.rest import api_reader
from claude_conductor.errors import ConductorError, InputError, ServerNotRunningError
from claude_conductor.settings import ConductorSettings
from claude_conductor.tiers.kubernetes.manifests import (
    apply_argv,
    find_kubectl,
    overlay_dir,
    render,
    run_kubectl,
)
from claude_conductor.tiers.status import DaemonStatus, ScaleResult, StackInfo, read_stack_status
from claude_conductor.work_pools.pools import set_agent_slots

if TYPE_CHECKING:
    from claude_conductor.tiers.base import UpOptions

__all__ = ["KubernetesTier"]

logger = logging.getLogger(__name__)

# Kept by `down` unless volumes=True: the data, and the namespace that holds it.
_KEPT_KINDS = frozenset({"Namespace", "PersistentVolumeClaim"})


class KubernetesTier:
    """The Kubernetes tier. ``overlay`` is ``dev`` or ``prod``; ``context`` a kubeconfig
    context (default: kubectl's current one); ``root`` the checkout holding the tree."""

    name = "kubernetes"

    def __init__(
        self,
        *,
        overlay: str = "dev",
        kubectl: str | None = None,
        context: str | None = None,
        root: Path | None = None,
    ) -> None:
        overlay_dir(overlay, root)  # fail early on a bad overlay name
        self.overlay = overlay
        self.kubectl = kubectl
        self.context = context
        self.root = root

    # -- kubectl ---------------------------------------------------------------------------
    def _base_argv(self) -> list[str]:
        argv = [find_kubectl(self.kubectl)]
        if self.context:
            argv += ["--context", self.context]
        return argv

    def _run(self, argv: list[str], *, stdin: str | None = None, what: str = "") -> str:
        return run_kubectl(argv, stdin=stdin, what=what)

    def check_cluster(self) -> None:
        """ConductorError unless kubectl reaches a cluster (its current or chosen context)."""
        try:
            self._run(
                [*self._base_argv(), "version", "--request-timeout=10s", "-o", "json"],
                what="version",
            )
        except ConductorError as exc:
            where = f"context {self.context!r}" if self.context else "kubectl's current context"
            raise ConductorError(
                f"no Kubernetes cluster reachable through {where} ({exc}); point kubectl at a "
                "cluster (kubectl config use-context NAME, or --context), or render the "
                "manifests without one: conductor deploy kubernetes --render"
            ) from exc

    # -- the Tier protocol -----------------------------------------------------------------
    def render(self, overlay: str | None = None) -> str:
        """The YAML of an overlay (``kubectl kustomize``; needs no cluster)."""
        return render(overlay or self.overlay, root=self.root, kubectl=self.kubectl)

    def up(self, settings: ConductorSettings, options: UpOptions | None = None) -> StackInfo:
        """``kubectl apply -k`` of the tier's overlay (agent slots follow the pool's limit,
        set with ``scale_agents``; the other options have no meaning on a cluster)."""
        path = overlay_dir(self.overlay, self.root)
        find_kubectl(self.kubectl)
        self.check_cluster()
        out = self._run(
            apply_argv(find_kubectl(self.kubectl), path, context=self.context), what="apply -k"
        )
        applied = [line.strip() for line in out.splitlines() if line.strip()]
        return self._base_info(settings).model_copy(update={"started": applied})

    def down(self, settings: ConductorSettings, *, volumes: bool = False) -> list[DaemonStatus]:
        """Delete what the overlay created; keep the namespace and its volumes (the database,
        the backups) unless ``volumes``."""
        del settings
        self.check_cluster()
        docs = [d for d in yaml.safe_load_all(self.render()) if d]
        if not volumes:
            docs = [d for d in docs if d.get("kind") not in _KEPT_KINDS]
        out = self._run(
            [*self._base_argv(), "delete", "--ignore-not-found", "--wait=false", "-f", "-"],
            stdin=yaml.safe_dump_all(docs),
            what="delete",
        )
        return [
            DaemonStatus(name=line.strip(), running=False)
            for line in out.splitlines()
            if line.strip()
        ]

    def status(self, settings: ConductorSettings) -> StackInfo:
        """What the cluster's Prefect API reports (pools, slots, runs)."""
        base = self._base_info(settings)

        async def _query() -> StackInfo:
            async with api_reader(settings) as api:
                healthy = base.model_copy(update={"healthy": True})
                return await read_stack_status(api, settings, healthy)

        try:
            return run_sync(_query())
        except ServerNotRunningError:
            return base

    def scale_agents(self, settings: ConductorSettings, agents: int) -> ScaleResult:
        """Agent slots = the agents pool's limit on the cluster's API, at once. (Pods follow:
        KEDA scales the warm pool on queue depth; in Job mode each slot is a Job.)"""
        if agents < 1:
            raise InputError(
                f"agents must be at least 1, got {agents!r}", field="agents", value=agents
            )

        async def _scale() -> None:
            async with conductor_client(settings) as api:
                await set_agent_slots(api, settings, agents)

        run_sync(_scale())
        return ScaleResult(
            agents=agents,
            applied_live=True,
            config_path=f"work pool {settings.worker.pool} (set CONDUCTOR_AGENTS in "
            "conductor-config to keep it across a re-configure)",
        )

    def scaling_advice(self, settings: ConductorSettings) -> str:
        return (
            f"Kubernetes tier: agent slots are the {settings.worker.pool!r} pool's limit "
            "(conductor agents scale N). Warm pool: KEDA adds an agent pod per "
            "CONDUCTOR_AGENTS_PER_POD queued tasks (ScaledObject agent-pool, max 16 pods; "
            "raise maxReplicaCount for more). Job per task: engines run in the job-worker pods "
            "(CONDUCTOR_AGENTS_PER_POD each; scale the Deployment) and each agent is a Job, so "
            "the cluster's capacity and the namespace's LimitRange bound it. The API scales on "
            "CPU (HPA prefect-api); past one API replica use the prod overlay (PostgreSQL "
            "and Redis are already shared)."
        )

    def _base_info(self, settings: ConductorSettings) -> StackInfo:
        return StackInfo(
            tier="kubernetes",
            api_url=settings.server.url,
            ui_url=settings.server.ui,
            dashboard_url=settings.server.ui + "/dashboard/",
            healthy=False,
            pool=settings.worker.pool,
            coordinator_pool=settings.worker.coordinator_pool,
        )
