"""The agent Job of the Job-per-task mode, as the ``kubernetes`` placement renders it for a
launch (``plan`` -> the launch file the attach helper reads): valid for three Kubernetes
versions under strict schemas, hardened, bounded by the task's timeout, labelled for the
NetworkPolicies, without any credential, and nothing a task sets reaches the pod's isolation."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from claude_conductor.agents.kube_attach import LaunchFile
from claude_conductor.agents.kubernetes_placement import (
    FIXED_POD_FIELDS,
    KubernetesPlacement,
    job_name,
    load_job_template,
    render_agent_job,
)
from claude_conductor.agents.placement import LaunchRequest
from claude_conductor.errors import InputError
from claude_conductor.settings import AgentSettings, ConductorSettings, load_settings

pytestmark = pytest.mark.kubernetes

K8S_VERSIONS = ("1.30.0", "1.32.0", "1.34.0")
API_KEY = "sk-agent-key-never-in-a-job-0123"


def _settings(tmp_path: Path, **kube: Any) -> ConductorSettings:
    return ConductorSettings(
        home=tmp_path,
        agent=AgentSettings(
            placement="kubernetes",
            kubernetes={"namespace": "team-a", "image": "registry.example.com/cc:0.1.0", **kube},
        ),
    )


def _request(tmp_path: Path, **fields: Any) -> LaunchRequest:
    base: dict[str, Any] = {
        "task_id": "T-20261205-fix_Bug",
        "role": "agent",
        "argv": ["/opt/claude", "--print", "--", "fix it"],
        "env": {"ANTHROPIC_API_KEY": API_KEY, "PATH": "/usr/bin"},
        "workspace": tmp_path,
        "timeout_seconds": 900.4,
    }
    return LaunchRequest(**{**base, **fields})


def _plan(tmp_path: Path, request: LaunchRequest | None = None, **kube: Any) -> LaunchFile:
    plan = KubernetesPlacement(_settings(tmp_path, **kube)).plan(request or _request(tmp_path))
    launch_path = Path(plan.argv[-1])
    assert plan.argv[1:3] == ["-m", "claude_conductor.agents.kube_attach"]
    assert stat.S_IMODE(launch_path.stat().st_mode) == 0o600  # it holds the agent's env
    launch = LaunchFile.model_validate_json(launch_path.read_text())
    launch_path.unlink()
    return launch


def test_rendered_job_is_valid_hardened_bounded_and_holds_no_credential(tmp_path: Path) -> None:
    launch = _plan(tmp_path)
    job = launch.job
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(job, version, strict=True)
    assert job["metadata"]["namespace"] == "team-a"
    assert job["metadata"]["name"].startswith("cc-t-20261205-fix-bug-agent-")
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 901 + 300  # the task's timeout + the margin
    assert spec["ttlSecondsAfterFinished"] == 300
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "conductor-agent"
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False and pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["privileged"] is False
    assert container["image"] == "registry.example.com/cc:0.1.0"
    assert container["stdin"] is True and container["stdinOnce"] is True
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    }
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"/workspace", "/home/agent", "/tmp"}
    assert all(set(v) == {"name", "emptyDir"} for v in pod["volumes"])
    # The labels the NetworkPolicies select: agent (model endpoint only), never api-client.
    for labels in (job["metadata"]["labels"], spec["template"]["metadata"]["labels"]):
        assert labels["conductor.io/agent"] == "true"
        assert "conductor.io/api-client" not in labels
        assert labels["conductor.io/task"] == "t-20261205-fix-bug"
    # No credential in the Job object: the model key travels over attach, nothing else goes.
    text = json.dumps(job)
    assert API_KEY not in text and "PREFECT" not in text and "secretKeyRef" not in text
    assert launch.env["ANTHROPIC_API_KEY"] == API_KEY  # ... in the 0600 launch file only


def test_nothing_a_task_sets_widens_the_pod(tmp_path: Path) -> None:
    safe = _plan(tmp_path).job["spec"]["template"]["spec"]
    # Replay of the docker-tier escalation (issue 14) through what a task controls: its id,
    # its command, its environment, its timeout.
    hostile = _request(
        tmp_path,
        task_id='x"; privileged: true; hostPath: /',
        role="shell",
        argv=["/bin/sh", "-c", "mount -t proc proc /proc"],
        env={"KUBERNETES_SERVICE_HOST": "10.0.0.1", "securityContext": "privileged"},
        timeout_seconds=86400,
    )
    widened = _plan(tmp_path, hostile).job
    pod = widened["spec"]["template"]["spec"]
    for key in FIXED_POD_FIELDS:
        assert pod.get(key) == safe.get(key), key
    container, base = pod["containers"][0], safe["containers"][0]
    for key in ("securityContext", "image", "volumeMounts", "command", "env", "stdin"):
        assert container[key] == base[key], key
    assert widened["metadata"]["namespace"] == "team-a"
    assert set(widened["metadata"]["labels"]["conductor.io/task"]) <= set(
        "abcdefghijklmnopqrstuvwxyz0123456789-"
    )
    kubernetes_validate.validate(widened, K8S_VERSIONS[-1], strict=True)


def test_names_are_valid_and_unique() -> None:
    names = {job_name("T-1", "agent") for _ in range(50)}
    assert len(names) == 50
    long = job_name("a" * 200, "shell")
    assert len(long) <= 52 and long.startswith("cc-aaaa")


def test_settings_and_templates_are_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONDUCTOR_AGENT__KUBERNETES__IMAGE", "claude-conductor:latest")
    with pytest.raises(InputError, match=r"agent\.kubernetes\.image.*pinned tag"):
        load_settings(home=tmp_path)
    monkeypatch.setenv("CONDUCTOR_AGENT__KUBERNETES__IMAGE", "claude-conductor:0.1.0")
    monkeypatch.setenv("CONDUCTOR_AGENT__KUBERNETES__MEMORY_LIMIT", "64Ti")
    with pytest.raises(InputError, match="memory_limit"):
        load_settings(home=tmp_path)
    with pytest.raises(InputError, match="template_path"):
        load_job_template(tmp_path / "missing.json")
    with pytest.raises(InputError, match="timeout_seconds"):
        render_agent_job(
            load_job_template(), _settings(tmp_path).agent.kubernetes,
            _request(tmp_path, timeout_seconds=0), "cc-x",
        )  # fmt: skip


def test_an_operators_own_template_is_used(tmp_path: Path) -> None:
    template = load_job_template()
    template["spec"]["template"]["spec"]["nodeSelector"] = {"pool": "agents"}
    path = tmp_path / "agent-job.json"
    path.write_text(json.dumps(template))
    job = _plan(tmp_path, template_path=str(path)).job
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "agents"}
