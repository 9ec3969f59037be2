"""The seam a forked run uses to send its logs before its final state: Prefect's flow engine
proposes states through names it owns, swapped while the run runs and put back after (the
stack tests show the logs in the API when the run ends: test_conductor_worker_stack.py)."""

from __future__ import annotations

import prefect.flow_engine as flow_engine
import pytest

from claude_conductor.work_pools.run_logs import send_logs_before_final_states


def test_the_flow_engine_proposes_states_through_the_swapped_names_then_gets_them_back() -> None:
    before = (flow_engine.propose_state, flow_engine.propose_state_sync)
    with send_logs_before_final_states(1.0):
        during = (flow_engine.propose_state, flow_engine.propose_state_sync)
        assert during[0] is not before[0] and during[1] is not before[1]
    assert (flow_engine.propose_state, flow_engine.propose_state_sync) == before


def test_a_prefect_without_those_names_runs_flows_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(flow_engine, "propose_state")
    with send_logs_before_final_states(1.0):
        assert not hasattr(flow_engine, "propose_state")
    assert not hasattr(flow_engine, "propose_state")
