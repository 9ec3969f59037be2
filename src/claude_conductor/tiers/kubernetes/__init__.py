"""The Kubernetes tier: the kustomize tree in ``deployments/kubernetes`` (rendered and applied
with kubectl), the agent Job template of the Job-per-task mode, and the configure step that
runs inside the cluster."""

from __future__ import annotations

from claude_conductor.tiers.kubernetes.manifests import OVERLAYS, manifests_dir, render
from claude_conductor.tiers.kubernetes.tier import KubernetesTier

__all__ = ["OVERLAYS", "KubernetesTier", "manifests_dir", "render"]
