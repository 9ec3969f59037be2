"""A flow run is a task whoever started it: the task id every client computes from the run,
the run's name and tags (``flows.identity``). Flow runs here are the API's own objects, built
in memory as the API returns them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from prefect.client.schemas.objects import FlowRun

from claude_conductor.flows.identity import (
    derived_task_id,
    identity_update,
    run_name,
    submission_tags,
    task_id_of,
)
from claude_conductor.models import TaskSpec

RUN_ID = UUID("3f9a1c00-0000-4000-8000-000000000000")
CREATED = datetime(2026, 11, 24, 8, 25, 39, tzinfo=UTC)


def _run(name: str = "witty-lemur", tags: list[str] | None = None, **params: Any) -> FlowRun:
    return FlowRun(
        id=RUN_ID,
        name=name,
        flow_id=UUID(int=1),
        created=CREATED,
        parameters=params,
        tags=tags or [],
    )


def test_a_spec_that_names_its_id_is_that_task() -> None:
    run = _run(spec={"id": "review-auth", "prompt": "x"})
    assert task_id_of(run) == "review-auth"


def test_a_run_started_elsewhere_without_an_id_has_one_every_client_agrees_on() -> None:
    """`prefect deployment run`, the UI's Run button, a schedule: same id before it starts
    (from the listing) as the flow adopts when it runs."""
    run = _run(spec={"kind": "analysis", "prompt": "Explain"})
    assert task_id_of(run) == "t-20261124-082539-3f9a1c" == derived_task_id(RUN_ID, CREATED)
    assert task_id_of(run) == task_id_of(_run(name="renamed", spec={"prompt": "Explain"}))
    assert TaskSpec(id=task_id_of(run), prompt="Explain").branch == (
        "conductor/t-20261124-082539-3f9a1c"
    )  # a valid, branch-safe task id


def test_a_run_that_is_not_a_task_keeps_its_name() -> None:
    assert task_id_of(_run(name="some-other-flow", x=1)) == "some-other-flow"


def test_run_names_are_readable_and_start_with_the_id() -> None:
    spec = TaskSpec(id="t-1a", prompt="Review the last 10 commits\nin detail")
    assert run_name(spec) == "t-1a: Review the last 10 commits"
    long = TaskSpec(id="t-1b", title="x" * 200, prompt="p")
    assert len(run_name(long)) == len("t-1b: ") + 60 and run_name(long).endswith("…")


def test_the_update_that_makes_a_foreign_run_a_task() -> None:
    spec = TaskSpec(id="t-20261124-082539-3f9a1c", kind="analysis", prompt="Explain", tags=["x"])
    foreign = _run(tags=["conductor"], spec={"kind": "analysis", "prompt": "Explain"})
    update = identity_update(spec, foreign)
    assert update["name"] == "t-20261124-082539-3f9a1c: Explain"
    assert update["tags"] == [
        "conductor",
        "task:t-20261124-082539-3f9a1c",
        "kind:analysis",
        "priority:5",
        "x",
    ]
    ours = _run(name=run_name(spec), tags=submission_tags(spec), spec=spec.model_dump())
    assert identity_update(spec, ours) == {}  # what `conductor run` submits needs nothing


def test_an_empty_id_from_a_form_is_a_run_without_one() -> None:
    """The Prefect UI's form may send `"id": ""`: the task gets the run's id, as when omitted."""
    run = _run(spec={"id": "", "prompt": "Explain"})
    assert task_id_of(run) == derived_task_id(RUN_ID, CREATED)
    assert TaskSpec.model_validate({"id": "", "prompt": "Explain"}).id.startswith("t-")
