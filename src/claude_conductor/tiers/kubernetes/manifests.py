"""The kustomize tree of the Kubernetes tier: where it is, and rendering an overlay with
``kubectl kustomize`` (offline: kustomize is built into kubectl)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from claude_conductor.errors import ConductorError, InputError

__all__ = [
    "KUBECTL_TIMEOUT_SECONDS",
    "OVERLAYS",
    "apply_argv",
    "find_kubectl",
    "kustomize_argv",
    "manifests_dir",
    "overlay_dir",
    "render",
    "run_kubectl",
]

#: The overlays in the tree (deployments/kubernetes/overlays/NAME).
OVERLAYS: tuple[str, ...] = ("dev", "prod")
KUBECTL_TIMEOUT_SECONDS = 120.0

# src/claude_conductor/tiers/kubernetes/manifests.py -> the repository root
_REPO_ROOT = Path(__file__).resolve().parents[4]


def manifests_dir(root: Path | None = None) -> Path:
    """``deployments/kubernetes`` of this checkout (or under ``root``); InputError if absent."""
    base = (root if root is not None else _REPO_ROOT) / "deployments" / "kubernetes"
    if not (base / "base" / "kustomization.yaml").is_file():
        raise InputError(
            f"no Kubernetes manifests at {str(base)!r}: run from a Claude Conductor checkout "
            "(the tree is deployments/kubernetes in the repository) or pass --manifests DIR",
            field="manifests",
            value=str(base),
        )
    return base


def overlay_dir(overlay: str, root: Path | None = None) -> Path:
    """The folder of an overlay; InputError naming it when it is not one of ``OVERLAYS``."""
    if overlay not in OVERLAYS:
        raise InputError(
            f"unknown overlay {overlay!r}: choose one of {', '.join(OVERLAYS)} "
            "(deployments/kubernetes/overlays)",
            field="overlay",
            value=overlay,
        )
    return manifests_dir(root) / "overlays" / overlay


def find_kubectl(kubectl: str | None = None) -> str:
    """The kubectl binary; ConductorError saying how to get it when missing."""
    found = shutil.which(kubectl or "kubectl")
    if found is None:
        raise InputError(
            f"{kubectl or 'kubectl'!r} not found on PATH: install kubectl 1.27 or newer "
            "(kustomize v5 is built in), e.g. from your distribution or the Kubernetes release",
            field="kubectl",
            value=kubectl or "kubectl",
        )
    return found


def kustomize_argv(kubectl: str, path: Path) -> list[str]:
    """``kubectl kustomize PATH`` (rendering needs no cluster)."""
    return [kubectl, "kustomize", str(path)]


def apply_argv(kubectl: str, path: Path, *, context: str | None = None) -> list[str]:
    """``kubectl apply -k PATH`` (server-side, so field ownership stays with Conductor)."""
    argv = [kubectl]
    if context:
        argv += ["--context", context]
    return [*argv, "apply", "--server-side", "--field-manager", "claude-conductor", "-k", str(path)]


def render(overlay: str, *, root: Path | None = None, kubectl: str | None = None) -> str:
    """The YAML an overlay applies (what ``kubectl apply -k`` would send)."""
    path = overlay_dir(overlay, root)
    return run_kubectl(kustomize_argv(find_kubectl(kubectl), path), what=f"kustomize {path}")


def run_kubectl(argv: list[str], *, stdin: str | None = None, what: str = "") -> str:
    """Run a kubectl command line, bounded in time; its output, or one ConductorError with
    the last line kubectl printed."""
    what = what or " ".join(argv[1:3])
    try:
        proc = subprocess.run(
            argv,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=KUBECTL_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ConductorError(f"kubectl {what} took over {KUBECTL_TIMEOUT_SECONDS:.0f} s") from exc
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ConductorError(f"kubectl {what} failed: {tail}")
    return proc.stdout
