"""Every error pickles with its fields: errors cross process boundaries in Prefect (a task
run's exception is stored and re-raised elsewhere)."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from claude_conductor import errors
from claude_conductor.dashboard.cache import ApiTimeoutError
from claude_conductor.flows.steps import WorkOutcome
from claude_conductor.flows.task_flow import AgentCrashed
from claude_conductor.models import TaskStatus

CASES: list[tuple[errors.ConductorError, dict[str, Any]]] = [
    (errors.ConductorError("boom"), {}),
    (errors.InputError("bad agents", field="worker.agents", value=0), {"field": "worker.agents"}),
    (errors.TaskFileError("t.yaml", "not YAML", field="prompt"), {"path": "t.yaml"}),
    (errors.NotFoundError("no task 'x'", field="task_id", value="x"), {"value": "x"}),
    (errors.RepoUnreadableError("git cannot use repo", field="repo"), {"field": "repo"}),
    (errors.ServerNotRunningError("http://127.0.0.1:9/api"), {"url": "http://127.0.0.1:9/api"}),
    (errors.WorkspaceError("git failed", stderr_tail="fatal: x"), {"stderr_tail": "fatal: x"}),
    (errors.AgentError("died", exit_code=137, stderr_tail="oom"), {"agent_exit_code": 137}),
    (errors.DaemonError("no start", name="server", log_tail="l1\nl2"), {"name": "server"}),
    (ApiTimeoutError("no answer in 20 s"), {}),
    (
        AgentCrashed(WorkOutcome(status=TaskStatus.FAILED, error="killed", summary="")),
        {"message": "killed"},
    ),
]


@pytest.mark.parametrize(("error", "fields"), CASES, ids=lambda c: type(c).__name__)
def test_pickle_round_trip_keeps_class_message_and_fields(
    error: errors.ConductorError, fields: dict[str, Any]
) -> None:
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error)
    assert str(again) == str(error) and again.args == error.args
    assert again.exit_code == error.exit_code
    assert vars(again).keys() == vars(error).keys()
    for name, value in fields.items():
        assert getattr(again, name) == value


def test_every_error_in_the_tree_is_covered() -> None:
    covered = {type(e) for e, _ in CASES}
    public = {getattr(errors, n) for n in errors.__all__}
    assert public <= covered
    for cls in public:
        assert cls.__name__ in (errors.__doc__ or ""), f"{cls.__name__} not drawn in the tree"
