"""The agent Job of the Job-per-task mode: Conductor's kubernetes base job template
(``work_pools/templates/kubernetes.json``) filled in with this stack's namespace, image and
model endpoint, and the per-run job variables a task's timeout sets.

What a run may choose is only what the template's ``variables`` expose (name, command, env,
CPU/memory within bounds, deadline, TTL). The pod's user, volumes, capabilities, privileges,
service account (no token), labels (which NetworkPolicies select), namespace and image are
fixed here, so no run can widen its own pod.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from claude_conductor.errors import InputError
from claude_conductor.work_pools import pools

__all__ = [
    "DEADLINE_MARGIN_SECONDS",
    "FIXED_POD_FIELDS",
    "agent_job_template",
    "job_variables_for_timeout",
]

#: Setup (clone, install) and storing results on top of the task's own timeout.
DEADLINE_MARGIN_SECONDS = 300
#: Pod and container fields a job variable must never reach (checked by the tests).
FIXED_POD_FIELDS = (
    "securityContext",
    "serviceAccountName",
    "automountServiceAccountToken",
    "volumes",
    "volumeMounts",
    "hostPath",
    "hostNetwork",
    "hostPID",
    "hostIPC",
    "privileged",
    "capabilities",
    "runAsUser",
    "readOnlyRootFilesystem",
    "namespace",
    "image",
)


def agent_job_template(
    *, namespace: str, image: str, model_url: str, base: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The kubernetes base job template with this stack's namespace, image and model URL."""
    if not namespace:
        raise InputError("namespace is empty: set CONDUCTOR_K8S_NAMESPACE", field="namespace")
    if not image or image.endswith(":latest"):
        raise InputError(
            f"agent image {image!r}: give a pinned tag such as claude-conductor:0.1.0",
            field="image",
            value=image,
        )
    template = copy.deepcopy(base if base is not None else pools.load_template("kubernetes"))
    config: dict[str, Any] = template["job_configuration"]
    config["namespace"] = namespace
    manifest = config["job_manifest"]
    manifest["metadata"]["namespace"] = namespace
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    container["image"] = image
    env_default: dict[str, Any] = template["variables"]["properties"]["env"]["default"]
    env_default["ANTHROPIC_BASE_URL"] = model_url
    return template


def job_variables_for_timeout(timeout_seconds: float) -> dict[str, int]:
    """Job variables of a run whose task has this timeout: Kubernetes ends the Job at the
    timeout plus ``DEADLINE_MARGIN_SECONDS`` (the worker's own watch timeouts do nothing)."""
    if timeout_seconds <= 0:
        raise InputError(
            f"timeout_seconds must be positive, got {timeout_seconds!r}",
            field="timeout_seconds",
            value=timeout_seconds,
        )
    return {"active_deadline_seconds": math.ceil(timeout_seconds) + DEADLINE_MARGIN_SECONDS}
