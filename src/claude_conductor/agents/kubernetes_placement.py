"""The ``kubernetes`` placement: the work runs in a pod of its own (one Job per launch),
created by the engine, which stays in Conductor's worker (see docs/architecture.md).

``plan`` renders the agent Job from the hardened template (``agents/templates/
kubernetes-job.json``, or ``agent.kubernetes.template_path``): only the name, labels,
namespace, image, resources, ``activeDeadlineSeconds`` (the task's timeout plus
``deadline_margin_seconds``) and ``ttlSecondsAfterFinished`` are filled in; the pod's user,
service account (no token), volumes, capabilities and read-only root come from the template
and nothing a task sets reaches them. The plan's command is the attach helper
(``kube_attach``), given a 0600 launch file; its cleanup deletes the Job whatever happened.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
import secrets
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from claude_conductor.agents.kube_attach import CONTAINER, LaunchFile, delete_job, kube_client
from claude_conductor.agents.placement import LaunchPlan, LaunchRequest
from claude_conductor.errors import AgentError, InputError
from claude_conductor.settings import ConductorSettings, KubernetesPlacementSettings

__all__ = [
    "FIXED_POD_FIELDS",
    "KubernetesPlacement",
    "describe_agent_job",
    "helper_env",
    "job_name",
    "load_job_template",
    "render_agent_job",
]

FIXED_POD_FIELDS = (
    "securityContext",
    "serviceAccountName",
    "automountServiceAccountToken",
    "volumes",
    "hostNetwork",
    "hostPID",
    "hostIPC",
    "enableServiceLinks",
    "restartPolicy",
)
"""Pod fields the placement never writes: they are the template's alone (checked by tests)."""

logger = logging.getLogger(__name__)

_HELPER_ENV_NAMES = frozenset(
    {"PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV",
     "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "KUBECONFIG",
     "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy"}
)  # fmt: skip
_LABEL_UNSAFE = re.compile(r"[^a-z0-9-]+")


def load_job_template(path: Path | None = None) -> dict[str, Any]:
    """The agent Job template: ``path`` (an operator's own), else the packaged one."""
    try:
        if path is not None:
            text = Path(path).read_text(encoding="utf-8")
        else:
            source = resources.files("claude_conductor.agents") / "templates"
            text = (source / "kubernetes-job.json").read_text(encoding="utf-8")
        template: dict[str, Any] = json.loads(text)
    except (OSError, ValueError) as exc:
        raise InputError(
            f"agent.kubernetes.template_path {str(path)!r} is not a readable JSON Job "
            f"template: {exc}; fix the path or unset it to use the packaged template",
            field="agent.kubernetes.template_path",
            value=str(path),
        ) from exc
    containers = template.get("spec", {}).get("template", {}).get("spec", {}).get("containers")
    if template.get("kind") != "Job" or not containers or containers[0].get("name") != CONTAINER:
        raise InputError(
            f"the agent Job template {str(path or 'packaged')!r} must be a batch/v1 Job whose "
            f"first container is named {CONTAINER!r}",
            field="agent.kubernetes.template_path",
            value=str(path),
        )
    return template


def job_name(task_id: str, role: str, suffix: str | None = None) -> str:
    """``cc-<task>-<role>-<random>``: a valid, unique Job name of at most 52 characters
    (the pod adds ``-xxxxx`` and label values stop at 63)."""
    slug = _LABEL_UNSAFE.sub("-", task_id.lower()).strip("-")[:30].strip("-") or "task"
    return f"cc-{slug}-{role}-{suffix or secrets.token_hex(3)}"


def render_agent_job(
    template: dict[str, Any],
    kube: KubernetesPlacementSettings,
    request: LaunchRequest,
    name: str,
) -> dict[str, Any]:
    """The agent Job for ``request``: the template with the per-launch fields filled in."""
    if request.timeout_seconds <= 0:
        raise InputError(
            f"timeout_seconds must be positive, got {request.timeout_seconds!r}",
            field="timeout_seconds",
            value=request.timeout_seconds,
        )
    job = copy.deepcopy(template)
    task_label = _LABEL_UNSAFE.sub("-", request.task_id.lower()).strip("-")[:63].strip("-")
    labels = {"conductor.io/task": task_label or "task", "conductor.io/role": request.role}
    meta = job.setdefault("metadata", {})
    meta["name"] = name
    meta["namespace"] = kube.namespace
    meta.pop("generateName", None)
    meta.setdefault("labels", {}).update(labels)
    spec = job["spec"]
    spec["activeDeadlineSeconds"] = (
        math.ceil(request.timeout_seconds) + kube.deadline_margin_seconds
    )
    spec["ttlSecondsAfterFinished"] = kube.finished_job_ttl_seconds
    pod_meta = spec["template"].setdefault("metadata", {})
    pod_meta.setdefault("labels", {}).update(labels)
    container = spec["template"]["spec"]["containers"][0]
    container["image"] = kube.image
    container["resources"] = {
        "requests": {"cpu": kube.cpu_request, "memory": kube.memory_request},
        "limits": {"cpu": kube.cpu_limit, "memory": kube.memory_limit},
    }
    return job


def describe_agent_job(settings: ConductorSettings) -> str:
    """Render one agent Job from the settings (InputError when the template is broken) and
    say what agent pods will run: image, namespace, resources, deadline margin."""
    kube = settings.agent.kubernetes
    probe = LaunchRequest(
        task_id="configure-check", role="agent", argv=["claude"], env={},
        workspace=Path("/"), timeout_seconds=60,
    )  # fmt: skip
    job = render_agent_job(load_job_template(kube.template_path), kube, probe, "cc-check")
    container = job["spec"]["template"]["spec"]["containers"][0]
    limits = container["resources"]["limits"]
    template = str(kube.template_path) if kube.template_path else "the packaged template"
    return (
        f"agent Jobs: {container['image']} in namespace {kube.namespace} from {template}, "
        f"limits cpu {limits['cpu']} memory {limits['memory']}, deadline = timeout + "
        f"{kube.deadline_margin_seconds}s, removed {kube.finished_job_ttl_seconds}s after"
    )


def helper_env(environ: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """The attach helper's environment: what it needs to reach the Kubernetes API and run
    Python, never the engine's Prefect credential (the agent's own environment travels in the
    launch file, into the pod)."""
    return {
        name: value
        for name, value in environ.items()
        if name in _HELPER_ENV_NAMES or name.startswith("KUBERNETES_")
    }


class KubernetesPlacement:
    """The work runs in its own pod (a Job), created and followed by the attach helper."""

    name = "kubernetes"

    def __init__(self, settings: ConductorSettings) -> None:
        self.settings = settings
        self.kube = settings.agent.kubernetes
        self.template = load_job_template(self.kube.template_path)

    def plan(self, request: LaunchRequest) -> LaunchPlan:
        name = job_name(request.task_id, request.role)
        job = render_agent_job(self.template, self.kube, request, name)
        launch = LaunchFile(
            job=job,
            kube=self.kube,
            role=request.role,
            argv=list(request.argv),
            env=dict(request.env),
            workspace=str(request.workspace),
            stdin_used=request.stdin_used,
        )
        folder = self.settings.run_dir / "kube-launch"
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = folder / f"{name}.json"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(launch.model_dump_json())
        except OSError as exc:
            raise AgentError(
                f"cannot write the agent launch file in {str(folder)!r}: {exc}"
            ) from exc
        kube, namespace = self.kube, self.kube.namespace

        async def cleanup() -> None:
            path.unlink(missing_ok=True)
            try:
                async with kube_client(kube) as api:
                    if await delete_job(api, namespace, name):
                        logger.info("agent Job %s deleted", name)
            except (
                Exception
            ) as exc:  # the task's outcome stands; the Job's deadline and TTL bound it
                logger.warning(
                    "could not delete the agent Job %s/%s (%s: %s): Kubernetes ends it at its "
                    "activeDeadlineSeconds and removes it after ttlSecondsAfterFinished",
                    namespace, name, type(exc).__name__, exc,
                )  # fmt: skip

        return LaunchPlan(
            argv=[sys.executable, "-m", "claude_conductor.agents.kube_attach", str(path)],
            env=helper_env(os.environ),
            cwd=request.workspace,
            cleanup=cleanup,
        )
