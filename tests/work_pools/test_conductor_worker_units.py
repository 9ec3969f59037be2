"""The conductor worker's pure decisions: which runs are forked, how many retries a crashed
run has left, its pool template; and the forkserver's view of the code it loaded."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from prefect.client.schemas.objects import FlowRun, FlowRunPolicy
from prefect.client.schemas.responses import DeploymentResponse

from claude_conductor.work_pools import forking
from claude_conductor.work_pools.forkserver import loaded_source_files, settings_key
from claude_conductor.work_pools.pools import load_template
from claude_conductor.work_pools.worker import (
    WORKER_TYPE,
    ConductorWorker,
    fast_entrypoint,
    retries_left,
)


def _deployment(entrypoint: str | None, pull_steps: list[dict[str, Any]] | None) -> Any:
    return DeploymentResponse.model_construct(
        id=uuid4(), name="run", flow_id=uuid4(), entrypoint=entrypoint, pull_steps=pull_steps
    )


NOOP = [{"prefect.deployments.steps.set_working_directory": {"directory": "."}}]


@pytest.mark.parametrize(
    ("entrypoint", "pull_steps", "forked"),
    [
        ("claude_conductor.flows.task_flow.conductor_task", NOOP, True),
        ("claude_conductor.flows.task_flow.conductor_task", None, True),
        ("flows/task.py:conductor_task", None, False),  # a file: Prefect's own starter
        ("pkg.mod.flow", [{"prefect.deployments.steps.git_clone": {"repository": "x"}}], False),
        (
            "pkg.mod.flow",
            [{"prefect.deployments.steps.set_working_directory": {"directory": "/srv"}}],
            False,
        ),
        (None, None, False),
    ],
)
def test_only_module_path_deployments_without_real_pull_steps_are_forked(
    entrypoint: str | None, pull_steps: list[dict[str, Any]] | None, forked: bool
) -> None:
    assert (fast_entrypoint(_deployment(entrypoint, pull_steps)) is not None) is forked
    assert fast_entrypoint(None) is None


def _run(spec: dict[str, Any] | None, run_count: int, flow_retries: int | None = None) -> Any:
    return FlowRun.model_construct(
        id=uuid4(),
        flow_id=uuid4(),
        parameters={"spec": spec} if spec is not None else {},
        run_count=run_count,
        empirical_policy=FlowRunPolicy(retries=flow_retries),
    )


def test_retries_come_from_the_task_spec_or_the_flow() -> None:
    assert retries_left(_run({"retries": 2}, run_count=1)) == (2, 0)
    assert retries_left(_run({"retries": 2}, run_count=3)) == (2, 2)
    assert retries_left(_run({}, run_count=1)) == (0, 0)
    assert retries_left(_run(None, run_count=1, flow_retries=1)) == (1, 0)
    assert retries_left(_run({"retries": True}, run_count=1)) == (0, 0)  # not a number


def test_the_worker_type_is_registered_with_its_template() -> None:
    from prefect.plugins import load_prefect_collections
    from prefect.utilities.dispatch import lookup_type
    from prefect.workers.base import BaseWorker

    load_prefect_collections()
    assert lookup_type(BaseWorker, WORKER_TYPE) is ConductorWorker
    template = load_template("conductor")
    variables = template["variables"]["properties"]
    assert variables["fast_start"]["default"] is True
    assert template["job_configuration"]["fast_start"] == "{{ fast_start }}"
    # Everything the process worker's template offers stays available.
    assert set(load_template("process")["variables"]["properties"]) <= set(variables)


def test_the_code_fingerprint_changes_with_an_edit(tmp_path: Path) -> None:
    module = tmp_path / "mod.py"
    module.write_text("x = 1\n")
    before = forking.code_fingerprint([str(module)])
    module.write_text("x = 22\n")
    assert forking.code_fingerprint([str(module)]) != before
    edited = forking.code_fingerprint([str(module)])
    stat = module.stat()
    replacement = tmp_path / "new.py"  # a reinstall: a new file in its place, same time and size
    replacement.write_text("x = 33\n")
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    replacement.replace(module)
    assert forking.code_fingerprint([str(module)]) != edited
    module.unlink()
    assert forking.code_fingerprint([str(module)]) == ((-1, -1, -1),)


def test_the_forkserver_watches_third_party_and_own_code_not_the_stdlib() -> None:
    import json

    import prefect

    import claude_conductor

    files = loaded_source_files()
    assert prefect.__file__ in files and claude_conductor.__file__ in files
    assert json.__file__ not in files


def test_runs_share_prebuilt_prefect_settings_only_when_nothing_they_read_differs(
    tmp_path: Path,
) -> None:
    base = {"PREFECT_API_URL": "http://127.0.0.1:1/api", "PREFECT_HOME": str(tmp_path / "p")}
    one = {**base, "PREFECT__FLOW_RUN_ID": "a", "PATH": "/bin"}
    two = {**base, "PREFECT__FLOW_RUN_ID": "b", "PATH": "/usr/bin"}
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    run_a.mkdir()
    run_b.mkdir()
    # Per-run values and other variables are not settings; empty run folders read nothing.
    assert settings_key(one, str(run_a)) == settings_key(two, str(run_b))
    # A Prefect setting, or a settings file in the run's folder or the profiles file, is.
    assert settings_key({**one, "PREFECT_LOGGING_LEVEL": "DEBUG"}, str(run_a)) != settings_key(
        one, str(run_a)
    )
    (run_b / ".env").write_text("PREFECT_LOGGING_LEVEL=DEBUG\n")
    assert settings_key(one, str(run_a)) != settings_key(one, str(run_b))
    (tmp_path / "p").mkdir()
    before = settings_key(one, str(run_a))
    (tmp_path / "p" / "profiles.toml").write_text('active = "default"\n')
    assert settings_key(one, str(run_a)) != before


def test_prefect_clients_in_a_forked_run_share_one_verified_tls_context() -> None:
    import ssl

    import certifi

    from claude_conductor.work_pools.forkserver import SharedVerifiedContexts

    shared = SharedVerifiedContexts(ssl)
    verified = shared.create_default_context(cafile=certifi.where())
    assert shared.create_default_context(cafile=certifi.where()) is verified
    assert verified.verify_mode == ssl.CERT_REQUIRED and verified.check_hostname
    # An unverified one is Prefect's to change: always a new one, never the shared one.
    loose = shared.create_default_context()
    assert loose is not shared.create_default_context() and loose is not verified
    assert shared.SSLContext is ssl.SSLContext  # the rest of the module as it is


def test_every_prefect_module_that_builds_tls_contexts_shares_the_forkservers() -> None:
    """The API clients, the events and logs clients' version check and their wss://
    connections all get the one context (checked in a fresh interpreter: it changes modules)."""
    code = """
import ssl, certifi
import prefect.client.orchestration as a, prefect._internal.version_checking as b
import prefect._internal.websockets as c
from claude_conductor.work_pools.forkserver import SharedVerifiedContexts, share_verified_tls_contexts
share_verified_tls_contexts()
assert isinstance(a.ssl, SharedVerifiedContexts) and a.ssl is b.ssl is c.ssl, (a.ssl, b.ssl, c.ssl)
assert b.ssl.create_default_context(cafile=certifi.where()) is a.ssl.create_default_context(
    cafile=certifi.where())
assert ssl.create_default_context is not a.ssl.create_default_context  # only there
"""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_forkserver_builds_deferred_models_once_for_every_run() -> None:
    from pydantic import BaseModel, ConfigDict

    from claude_conductor.work_pools.forkserver import complete_models

    class Deferred(BaseModel):  # as Prefect's client schemas are: built at first use
        model_config = ConfigDict(defer_build=True)
        name: str

    assert not Deferred.__pydantic_complete__
    assert complete_models() >= 1
    assert Deferred.__pydantic_complete__
    assert Deferred(name="x").name == "x"


def test_the_workers_settings_become_variables_once_not_per_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings
    from prefect.settings.base import PrefectBaseSettings

    from claude_conductor.work_pools.worker import ConductorJobConfiguration

    calls = {"n": 0}
    original = PrefectBaseSettings.to_environment_variables

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += self is get_current_settings()  # not the nested sections' own calls
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PrefectBaseSettings, "to_environment_variables", counted)
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        expected = original(get_current_settings(), exclude_unset=True)
        first = ConductorJobConfiguration._base_environment()
        first["MUTATED"] = "1"  # a caller's copy: the cache is not changed through it
        assert ConductorJobConfiguration._base_environment() == expected
        assert forking.settings_environment() == expected
        assert calls["n"] == 1
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:8/api"}):
        # Other settings: built again.
        assert forking.settings_environment()["PREFECT_API_URL"] == "http://127.0.0.1:8/api"
        assert calls["n"] == 2


def test_forked_runs_watch_for_suspension_with_prefects_hook_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect import flow_engine

    from claude_conductor.work_pools import suspension

    monkeypatch.setattr(
        flow_engine, "observe_flow_run_suspension", flow_engine.observe_flow_run_suspension
    )
    assert suspension.install()  # this Prefect's hook is the one replaced
    assert flow_engine.observe_flow_run_suspension is suspension.observe_flow_run_suspension
    assert suspension.install()  # twice is harmless

    def other(flow_run_id: Any, *, timeout: float = 1) -> Any:  # another Prefect's hook
        raise AssertionError("not called")

    monkeypatch.setattr(flow_engine, "observe_flow_run_suspension", other)
    assert not suspension.install()
    assert flow_engine.observe_flow_run_suspension is other


def test_the_suspension_watch_neither_delays_the_start_nor_outlives_the_run() -> None:
    """Prefect's own waits for its subscription before the flow starts and polls 0.2 s for
    its end; here an API that does not answer delays neither, and no thread is left."""
    import threading
    import time

    from prefect._flow_run_suspension import FlowRunSuspensionRequest
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from claude_conductor.work_pools.suspension import observe_flow_run_suspension

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):  # nothing listens
        started = time.monotonic()
        with observe_flow_run_suspension(uuid4(), FlowRunSuspensionRequest()):
            entered = time.monotonic() - started
            time.sleep(0.3)  # the watch is connecting (and failing) meanwhile
        left = time.monotonic() - started - entered - 0.3
    assert entered < 0.1, entered
    assert left < 0.5, left
    assert not [t for t in threading.enumerate() if t.name == "suspension-observer"]


def test_a_worker_with_every_slot_busy_does_not_query_on_a_wake_up() -> None:
    """A run ending wakes the worker twice (its Completed event, its slot released): only a
    wake-up with a slot free asks the API for scheduled runs."""
    import anyio

    async def go() -> list[int]:
        worker = ConductorWorker(work_pool_name="agents", limit=1)
        worker._has_successfully_synced = True
        worker._limiter = anyio.CapacityLimiter(1)
        polls: list[int] = []

        async def poll() -> list[Any]:
            polls.append(int(worker._limiter.available_tokens))  # type: ignore[union-attr]
            return []

        worker.get_and_submit_flow_runs = poll  # type: ignore[method-assign]
        worker._limiter.acquire_on_behalf_of_nowait("busy")
        async with anyio.create_task_group() as group:
            group.start_soon(worker._poll_when_woken)
            worker._wake.set()  # the run's Completed event: its slot is still held
            await anyio.sleep(0.05)
            worker._limiter.release_on_behalf_of("busy")
            worker._wake.set()  # its slot released
            await anyio.sleep(0.05)
            group.cancel_scope.cancel()
        return polls

    assert anyio.run(go) == [1]


def test_the_end_of_its_own_run_does_not_wake_the_worker_its_slot_does() -> None:
    from prefect.events import Event

    worker = ConductorWorker(work_pool_name="agents", limit=1)
    own, other = uuid4(), uuid4()
    worker._own_runs.add(own)

    def event(name: str, resource: str) -> Event:
        return Event(event=name, resource={"prefect.resource.id": resource})

    assert worker._ends_own_run(event("prefect.flow-run.Completed", f"prefect.flow-run.{own}"))
    assert worker._ends_own_run(event("prefect.flow-run.Crashed", f"prefect.flow-run.{own}"))
    # Another worker's run ending (a pool slot may be free), a run scheduled, the pool: wake.
    assert not worker._ends_own_run(
        event("prefect.flow-run.Completed", f"prefect.flow-run.{other}")
    )
    assert not worker._ends_own_run(event("prefect.flow-run.Scheduled", f"prefect.flow-run.{own}"))
    assert not worker._ends_own_run(event("prefect.work-pool.ready", f"prefect.work-pool.{own}"))


def test_a_forked_runs_events_name_what_the_worker_handed_over_without_reading_it() -> None:
    """The worker sends the run's flow, deployment, work queue and work pool with it; the
    engine's events name them (as Prefect's would) and read none of them from the API."""
    import asyncio

    from prefect.client.schemas.objects import Flow, FlowRun, WorkPool, WorkQueue
    from prefect.client.schemas.responses import DeploymentResponse
    from prefect.context import FlowRunContext
    from prefect.events import related as prefect_related

    from claude_conductor.work_pools.related import related_objects, seed

    flow = Flow(id=uuid4(), name="conductor-task", tags=["flow-tag"])
    deployment = DeploymentResponse(id=uuid4(), name="run", flow_id=flow.id, tags=["dep-tag"])
    pool = WorkPool(name="conductor-agents", type="conductor", default_queue_id=uuid4())
    queue = WorkQueue(id=uuid4(), name="default", work_pool_id=pool.id)
    run = FlowRun(
        id=uuid4(),
        name="t-1: a task",
        flow_id=flow.id,
        deployment_id=deployment.id,
        work_queue_id=queue.id,
        work_pool_name=pool.name,
    )
    handed = related_objects(
        run, flow=flow, deployment=deployment, work_queue=queue, work_pool=pool
    )
    other = related_objects(run, flow=Flow(id=uuid4(), name="another"))
    assert other == {}  # not the run's: not handed over

    class NoReads:
        def __getattr__(self, name: str) -> Any:
            async def read(*args: Any) -> Any:
                raise AssertionError(f"the engine called {name} on the API")

            return read

    saved = dict(prefect_related.RESOURCE_CACHE)
    prefect_related.RESOURCE_CACHE.clear()
    try:
        assert seed(handed) == 4
        context = FlowRunContext.model_construct(flow_run=run)
        with context:
            resources = asyncio.run(
                prefect_related.related_resources_from_run_context(NoReads())  # type: ignore[arg-type]
            )
    finally:
        prefect_related.RESOURCE_CACHE.clear()
        prefect_related.RESOURCE_CACHE.update(saved)
    named = {r.id: r.get("prefect.resource.name") for r in resources}
    assert named[f"prefect.flow.{flow.id}"] == "conductor-task"
    assert named[f"prefect.deployment.{deployment.id}"] == "run"
    assert named[f"prefect.work-queue.{queue.id}"] == "default"
    assert named[f"prefect.work-pool.{pool.id}"] == "conductor-agents"
    assert {"prefect.tag.flow-tag", "prefect.tag.dep-tag"} <= set(named)


def test_an_engine_starts_from_the_run_the_worker_handed_over() -> None:
    """The worker sends the run as it left it (Pending); the engine uses it instead of
    reading it again, and reads it itself when the copy is missing, another run's or bad."""
    from prefect.states import Pending

    from claude_conductor.work_pools.forkserver import _handed_flow_run

    run = FlowRun(id=uuid4(), name="t-1", flow_id=uuid4(), parameters={"spec": {"x": 1}})
    run = run.model_copy(update={"state": Pending(), "state_type": Pending().type})
    request = {"flow_run_id": str(run.id), "flow_run": run.model_dump(mode="json")}
    handed = _handed_flow_run(request)
    assert handed is not None
    assert (handed.id, handed.parameters, handed.state_type) == (run.id, run.parameters, "PENDING")
    assert _handed_flow_run({"flow_run_id": str(run.id)}) is None
    assert _handed_flow_run({**request, "flow_run_id": str(uuid4())}) is None
    assert _handed_flow_run({**request, "flow_run": {"id": str(run.id), "flow_id": 3}}) is None


def test_a_run_too_large_to_hand_over_is_read_by_its_engine() -> None:
    """Parameters that would not fit the forkserver's message: the request goes without the
    run (the engine reads it) instead of failing."""
    import asyncio
    import socket
    from types import SimpleNamespace

    from claude_conductor.work_pools.forkserver import MAX_MESSAGE_BYTES

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        server = forking.Forkserver.__new__(forking.Forkserver)
        server._server = SimpleNamespace(alive=True, control=ours)  # type: ignore[assignment]
        big = {"flow_run_id": "r", "env": {}, "flow_run": {"id": "r", "p": "x" * MAX_MESSAGE_BYTES}}
        small = {"flow_run_id": "r", "env": {}, "flow_run": {"id": "r", "p": "x"}}
        for request, kept in ((small, True), (big, False)):
            asyncio.run(server.fork(request)).close()
            message, fds, _flags, _addr = socket.recv_fds(theirs, MAX_MESSAGE_BYTES, 1)
            for fd in fds:
                os.close(fd)
            assert ("flow_run" in json.loads(message)) is kept
    finally:
        ours.close()
        theirs.close()


def test_forked_engines_skip_the_handshakes_the_worker_already_made() -> None:
    """The server's version (checked by the worker's client at start) and, when the worker's
    client found the server without CSRF protection, the CSRF token request: each engine's
    clients would ask again on the way to every start."""
    from types import SimpleNamespace

    run = FlowRun(id=uuid4(), name="t-1", flow_id=uuid4())
    env = forking.engine_environment(run, {}, entrypoint="m.f", control_env={})
    assert env["PREFECT_CLIENT_SERVER_VERSION_CHECK_ENABLED"] == "false"
    mine = {"PREFECT_CLIENT_SERVER_VERSION_CHECK_ENABLED": "true"}
    env = forking.engine_environment(run, mine, entrypoint="m.f", control_env={})
    assert env["PREFECT_CLIENT_SERVER_VERSION_CHECK_ENABLED"] == "true"  # the user's choice

    worker = ConductorWorker(work_pool_name="agents", limit=1)
    for found, expected in (
        (False, {"PREFECT_CLIENT_CSRF_SUPPORT_ENABLED": "false"}),
        (True, {}),  # a server with CSRF protection (or not asked yet): engines ask too
    ):
        worker._client = SimpleNamespace(_client=SimpleNamespace(enable_csrf_support=found))  # type: ignore[assignment]
        assert worker._server_known_env() == expected
