"""Every tier's Prefect server's changes: a schema that passed the meta-schema check is not
checked again (values are validated exactly as before); the heap built at start-up is frozen
once the server serves."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from prefect.utilities.schema_tools import ValidationError, validate
from prefect.utilities.schema_tools import validation as prefect_validation

from claude_conductor.tiers.prefect_server import remembered_schema_checks

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"spec": {"type": "object", "properties": {"retries": {"type": "integer"}}}},
    "required": ["spec"],
}


@pytest.fixture
def remembered(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The patch applied for this test only; the meta-schema checks it lets through."""
    validator = prefect_validation._VALIDATOR
    monkeypatch.setattr(validator, "check_schema", validator.check_schema)  # restored after
    checked: list[Any] = []
    real = jsonschema.validators.validator_for

    def counting(schema: Any, default: Any = None) -> Any:
        if schema is validator.META_SCHEMA:  # once per real check
            checked.append(schema)
        return real(schema, default=default)

    monkeypatch.setattr(jsonschema.validators, "validator_for", counting)
    assert remembered_schema_checks()
    assert remembered_schema_checks()  # twice is harmless
    return checked


def test_a_schema_is_checked_once_and_values_are_still_validated(remembered: list[Any]) -> None:
    validate({"spec": {"retries": 1}}, SCHEMA, raise_on_error=True)
    assert len(remembered) == 1
    for _ in range(3):
        validate({"spec": {"retries": 2}}, SCHEMA, raise_on_error=True)
    assert len(remembered) == 1  # not checked again
    with pytest.raises(ValidationError, match="retries"):
        validate({"spec": {"retries": "x"}}, SCHEMA, raise_on_error=True)
    other = {**SCHEMA, "required": []}
    validate({}, other, raise_on_error=True)
    assert len(remembered) == 2  # another schema: checked


def test_an_invalid_schema_is_refused_every_time(remembered: list[Any]) -> None:
    bad = {"type": "object", "properties": {"spec": {"type": 12}}}
    for _ in range(2):
        with pytest.raises(jsonschema.SchemaError):
            validate({"spec": {}}, bad, raise_on_error=True, preprocess=False)
    assert len(remembered) == 2  # never remembered


def test_the_server_freezes_what_it_built_once_it_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    """A full garbage collection walked the server's whole start-up heap (0.26-0.39 s, a pause
    of the API); once uvicorn has started the app, that heap is frozen, so full passes walk
    only what was made since. Shown on a real uvicorn server on a loopback port."""
    import asyncio
    import gc
    import socket

    import uvicorn
    from uvicorn.server import Server

    from claude_conductor.tiers.prefect_server import frozen_startup_objects

    monkeypatch.setattr(Server, "startup", Server.startup)  # restored after
    assert frozen_startup_objects()
    assert frozen_startup_objects()  # twice is harmless

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    gc.unfreeze()
    try:

        async def serve_briefly() -> int:
            task = asyncio.create_task(server.serve(sockets=[sock]))
            while not server.started:
                await asyncio.sleep(0.01)
            frozen = gc.get_freeze_count()
            server.should_exit = True
            await task
            return frozen

        assert asyncio.run(serve_briefly()) > 1000  # this test process's objects, frozen
    finally:
        gc.unfreeze()
        sock.close()
