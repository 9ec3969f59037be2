"""Priority queues and base job templates (no server needed)."""

from __future__ import annotations

import pytest
from prefect.workers.process import ProcessWorker

from claude_conductor.errors import InputError
from claude_conductor.models import TaskSpec
from claude_conductor.work_pools.pools import (
    DEFAULT_QUEUE,
    PRIORITY_QUEUES,
    load_template,
    queue_for_priority,
)


@pytest.mark.parametrize(
    ("priority", "queue"),
    [(10, "urgent"), (9, "urgent"), (8, "urgent"), (7, "normal"), (5, "normal"),
     (4, "normal"), (3, "low"), (2, "low"), (1, "low")],
)  # fmt: skip
def test_priority_maps_to_queue(priority: int, queue: str) -> None:
    assert queue_for_priority(priority) == queue


def test_queues_are_served_most_urgent_first_and_cover_every_priority() -> None:
    ordered = sorted(PRIORITY_QUEUES, key=lambda q: q.queue_priority)
    assert [q.name for q in ordered] == ["urgent", "normal", "low"]
    covered = sorted(p for q in PRIORITY_QUEUES for p in range(q.min_priority, q.max_priority + 1))
    assert covered == list(range(1, 11))
    assert queue_for_priority(TaskSpec(prompt="x").priority) == DEFAULT_QUEUE


@pytest.mark.parametrize("priority", [0, 11, -1])
def test_out_of_range_priority_is_an_input_error(priority: int) -> None:
    with pytest.raises(InputError, match="1 \\(lowest\\) to 10"):
        queue_for_priority(priority)


def test_process_template_is_prefects_with_conductors_defaults() -> None:
    ours = load_template("process")
    stock = ProcessWorker.get_default_base_job_template()
    assert ours["job_configuration"] == stock["job_configuration"]
    assert set(ours["variables"]["properties"]) == set(stock["variables"]["properties"])
    env_default = ours["variables"]["properties"]["env"]["default"]
    assert env_default["PREFECT_LOGGING_EXTRA_LOGGERS"] == "claude_conductor"
    # A fresh copy each time: callers may change it.
    ours["variables"]["properties"].clear()
    assert load_template("process")["variables"]["properties"]


@pytest.mark.parametrize("kind", ["docker", "kubernetes"])
def test_templates_not_shipped_yet_say_so(kind: str) -> None:
    # Only the process template exists so far; the others arrive with their tiers.
    try:
        template = load_template(kind)  # type: ignore[arg-type]
    except InputError as exc:
        assert kind in str(exc) and "templates" in str(exc)
    else:
        assert "job_configuration" in template and "variables" in template
