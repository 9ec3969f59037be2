"""The deployment definitions, and prefect.yaml declaring exactly the same ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.flows import Flow
from prefect.utilities.importtools import import_object

from claude_conductor.models import TASK_KINDS, TaskSpec
from claude_conductor.settings import WorkerSettings
from claude_conductor.work_pools.deployments import (
    DEPLOYMENTS,
    NIGHTLY_REVIEW_DEPLOYMENT,
    PULL_STEPS,
    spec_parameter_schema,
)

PREFECT_YAML = Path(__file__).resolve().parents[2] / "prefect.yaml"


def test_the_three_deployments_and_their_pools() -> None:
    names = {d.full_name: d for d in DEPLOYMENTS}
    assert set(names) == {
        "conductor-task/run",
        "conductor-fanout/run",
        "conductor-task/nightly-review",
    }
    assert names["conductor-task/run"].pool == "agents"
    assert names["conductor-task/nightly-review"].pool == "agents"
    # Fan-out parents wait on agent runs: never on the agent pool (deadlock at N parents).
    assert names["conductor-fanout/run"].pool == "coordinators"


@pytest.mark.parametrize("definition", DEPLOYMENTS, ids=lambda d: d.full_name)
def test_entrypoints_are_module_paths_to_the_named_flows(definition: Any) -> None:
    assert ":" not in definition.entrypoint  # MODULE_PATH form: imported, never copied
    flow = import_object(definition.entrypoint)
    assert isinstance(flow, Flow)
    assert flow.name == definition.flow_name
    assert list(flow.parameters.properties) == ["spec"]


def test_nightly_review_is_an_inactive_valid_code_review() -> None:
    schedule = NIGHTLY_REVIEW_DEPLOYMENT.schedule
    assert schedule is not None and not schedule.active
    assert schedule.cron == "0 2 * * *"
    spec = TaskSpec.model_validate(NIGHTLY_REVIEW_DEPLOYMENT.parameters["spec"])
    assert spec.kind == "code_review"
    # No fixed id: every nightly run gets its own task id (and branch).
    assert "id" not in NIGHTLY_REVIEW_DEPLOYMENT.parameters["spec"]


def test_parameter_schema_is_one_required_typed_task_spec() -> None:
    """The Prefect UI's Run form is drawn from this: every TaskSpec field, each described."""
    schema = spec_parameter_schema()
    assert schema["required"] == ["spec"]
    assert schema["properties"]["spec"]["$ref"] == "#/definitions/TaskSpec"
    fields = schema["definitions"]["TaskSpec"]["properties"]
    assert set(fields) == set(TaskSpec.model_fields)
    for name, field in fields.items():
        assert field.get("description"), f"TaskSpec.{name} has no description for the UI"
    assert fields["kind"]["enum"] == list(TASK_KINDS)
    assert fields["priority"]["minimum"] == 1 and fields["priority"]["maximum"] == 10
    # The id is generated when a run (from any client) names none.
    assert "id" not in schema["definitions"]["TaskSpec"].get("required", [])


@pytest.mark.parametrize("definition", DEPLOYMENTS, ids=lambda d: d.full_name)
def test_flows_declare_the_schema_the_deployments_register(definition: Any) -> None:
    """What `prefect deploy` (prefect.yaml) computes from the flow's own signature is what
    `conductor up` registers."""
    flow = import_object(definition.entrypoint)
    assert flow.parameters.model_dump(exclude_unset=True) == spec_parameter_schema()


def _yaml_view(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """prefect.yaml's deployments keyed by (entrypoint, name), fields as Conductor sees them."""
    view = {}
    for dep in doc["deployments"]:
        schedules = dep.get("schedules") or []
        view[(dep["entrypoint"], dep["name"])] = {
            "pool": dep["work_pool"]["name"],
            "queue": dep["work_pool"]["work_queue_name"],
            "tags": list(dep.get("tags") or []),
            "description": dep.get("description", ""),
            "parameters": dep.get("parameters") or {},
            "schedules": [
                {k: s.get(k) for k in ("slug", "cron", "timezone", "active")} for s in schedules
            ],
            "pull": dep.get("pull", doc.get("pull")),
        }
    return view


def test_prefect_yaml_declares_the_same_deployments() -> None:
    doc = yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))
    defaults = WorkerSettings()  # prefect.yaml names the default pools
    pools = {"agents": defaults.pool, "coordinators": defaults.coordinator_pool}
    expected = {
        (d.entrypoint, d.name): {
            "pool": pools[d.pool],
            "queue": d.work_queue,
            "tags": list(d.tags),
            "description": d.description,
            "parameters": d.parameters,
            "schedules": [d.schedule.model_dump()] if d.schedule else [],
            "pull": PULL_STEPS,
        }
        for d in DEPLOYMENTS
    }
    assert _yaml_view(doc) == expected
    # Nothing to build or push: `prefect deploy --all` must never ask a question.
    assert doc["build"] is None and doc["push"] is None


def test_submitters_name_deployments_from_the_one_list() -> None:
    """The CLI, the dashboard (client.tasks) and fan-out parents submit to deployments by the
    names defined here, and prefect.yaml declares each of them."""
    from claude_conductor.client import tasks
    from claude_conductor.flows import fanout
    from claude_conductor.work_pools.deployments import FANOUT_DEPLOYMENT, TASK_DEPLOYMENT

    names = {d.full_name for d in DEPLOYMENTS}
    assert tasks.TASK_DEPLOYMENT == fanout.TASK_DEPLOYMENT == TASK_DEPLOYMENT.full_name
    assert FANOUT_DEPLOYMENT.full_name == tasks.FANOUT_DEPLOYMENT
    assert {tasks.TASK_DEPLOYMENT, tasks.FANOUT_DEPLOYMENT} <= names
    doc = yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))
    flows = {d.entrypoint.rsplit(".", 1)[1]: d.flow_name for d in DEPLOYMENTS}
    declared = {
        f"{flows[e['entrypoint'].rsplit(':', 1)[-1].rsplit('.', 1)[-1]]}/{e['name']}"
        for e in doc["deployments"]
    }
    assert names == declared
