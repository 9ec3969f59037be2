"""The agent Job of the Job-per-task mode, rendered by prefect-kubernetes itself for a flow run
(``from_template_and_values`` then ``prepare_for_flow_run``, what the worker does before it
creates the Job), validated strictly and checked for its isolation, deadline and labels."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import kubernetes_validate
import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun
from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

from claude_conductor.errors import InputError
from claude_conductor.tiers.kubernetes.agent_jobs import (
    DEADLINE_MARGIN_SECONDS,
    agent_job_template,
    job_variables_for_timeout,
)
from claude_conductor.work_pools.pools import load_template

pytestmark = pytest.mark.kubernetes

ALLOWED_VARIABLES = {
    "name", "command", "env", "cpu_request", "cpu_limit", "memory_request", "memory_limit",
    "active_deadline_seconds", "finished_job_ttl",
}  # fmt: skip


async def _render(template: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
    # The client is only needed for block/variable references, which the template has none of;
    # it points nowhere so that any request would fail the test.
    async with PrefectClient("http://127.0.0.1:9/api") as client:
        config = await KubernetesWorkerJobConfiguration.from_template_and_values(
            template, variables, client=client
        )
    run = FlowRun(id=uuid.uuid4(), name="task-7f3a", flow_id=uuid.uuid4())
    config.prepare_for_flow_run(run)
    manifest: dict[str, Any] = config.job_manifest
    assert manifest["metadata"]["labels"]["prefect.io/flow-run-id"] == str(run.id)
    return manifest


def _strict_validate(manifest: dict[str, Any]) -> None:
    # prefect-kubernetes 0.8.0's worker insists on `parallelism` and `completions` inside the
    # *pod* spec of its template (they belong to the Job spec), and strict schemas reject
    # unknown pod fields: strip exactly those two before validating.
    job = copy.deepcopy(manifest)
    pod = job["spec"]["template"]["spec"]
    assert pod.pop("parallelism") == 1 and pod.pop("completions") == 1
    for version in ("1.30.0", "1.32.0", "1.34.0"):
        kubernetes_validate.validate(job, version, strict=True)


def _template() -> dict[str, Any]:
    return agent_job_template(
        namespace="claude-conductor",
        image="claude-conductor:0.1.0",
        model_url="http://scripted-model:8765",
    )


async def test_rendered_job_is_valid_hardened_and_bounded() -> None:
    manifest = await _render(_template(), job_variables_for_timeout(900))
    _strict_validate(manifest)
    spec = manifest["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 900 + DEADLINE_MARGIN_SECONDS
    assert spec["ttlSecondsAfterFinished"] > 0
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "conductor-agent"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["privileged"] is False
    assert container["image"] == "claude-conductor:0.1.0"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert set(mounts) == {"/var/lib/conductor", "/tmp/home", "/tmp"}
    assert all("emptyDir" in v for v in pod["volumes"])
    assert container["args"][:3] == ["prefect", "flow-run", "execute"]
    # The labels the NetworkPolicies select, on the Job and on its pod.
    for labels in (manifest["metadata"]["labels"], spec["template"]["metadata"]["labels"]):
        assert labels["conductor.io/agent"] == "true"
        assert labels["conductor.io/api-client"] == "true"
    env = {e["name"]: e for e in container["env"]}
    auth = env["PREFECT_API_AUTH_STRING"]
    assert "value" not in auth
    assert auth["valueFrom"]["secretKeyRef"] == {
        "name": "conductor-prefect-auth",
        "key": "auth-string",
    }
    assert env["ANTHROPIC_BASE_URL"]["value"] == "http://scripted-model:8765"
    # backoffLimit 0: Prefect, not Kubernetes, retries; an evicted run is rescheduled.
    assert env["PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR"]["value"] == "reschedule"


async def test_no_job_variable_can_widen_the_pod() -> None:
    template = _template()
    assert set(template["variables"]["properties"]) == ALLOWED_VARIABLES
    safe = await _render(template, {})
    # Replay of the docker-tier escalation (issue 14), in Kubernetes terms.
    hostile = {
        "user": "0:0",
        "privileged": True,
        "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
        "capabilities": ["SYS_ADMIN"],
        "service_account_name": "conductor-worker",
        "namespace": "kube-system",
        "image": "evil:latest",
        "labels": {"app.kubernetes.io/name": "job-worker"},
        "read_only": False,
    }
    widened = await _render(template, hostile)
    for path in (
        ("spec", "template", "spec", "securityContext"),
        ("spec", "template", "spec", "volumes"),
        ("spec", "template", "spec", "serviceAccountName"),
        ("metadata", "namespace"),
    ):
        a: Any = safe
        b: Any = widened
        for key in path:
            a, b = a[key], b[key]
        assert a == b, path
    sa, sb = (m["spec"]["template"]["spec"]["containers"][0] for m in (safe, widened))
    for key in ("securityContext", "image", "volumeMounts"):
        assert sa[key] == sb[key], key
    assert "job-worker" not in str(widened["spec"]["template"]["metadata"]["labels"])


def test_deadline_follows_the_task_timeout() -> None:
    assert job_variables_for_timeout(60.2) == {"active_deadline_seconds": 61 + 300}
    with pytest.raises(InputError, match="timeout_seconds"):
        job_variables_for_timeout(0)
    with pytest.raises(InputError, match="pinned tag"):
        agent_job_template(namespace="x", image="claude-conductor:latest", model_url="u")


def test_template_ships_and_defaults_are_bounded() -> None:
    props = load_template("kubernetes")["variables"]["properties"]
    assert props["active_deadline_seconds"]["maximum"] <= 90000
    assert props["active_deadline_seconds"]["default"] >= 900 + DEADLINE_MARGIN_SECONDS
