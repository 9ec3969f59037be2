"""Every tier's Prefect API server: ``prefect server start`` itself, with three changes: every
SQLite transaction it begins is ``BEGIN IMMEDIATE`` (the standalone tier's database; PostgreSQL
is untouched), a JSON schema it has checked once is not checked again, and what it built while
starting is kept out of the garbage collector's full passes. The standalone tier
starts it (``tiers.standalone.launch``), the docker image's ``server`` role and the Kubernetes
API Deployment run it.

Prefect begins most transactions ``DEFERRED``: one that reads, then writes after another
connection has written, gets ``SQLITE_BUSY`` at once (SQLite cannot wait it out: its snapshot
is stale), and the API answers 503. Concurrent submissions, a worker and several flow runs
writing at once hit this constantly (about 19 of 20 simultaneous ``create_flow_run`` calls
were refused on this machine); clients retry after a back-off of seconds. Begun
``IMMEDIATE``, a transaction takes the write lock first and waits for it (Prefect's
``busy_timeout``, 60 s) instead of failing: writers queue, which SQLite does anyway, since it
has one writer at a time. Reads outside transactions are unchanged. PostgreSQL is untouched.

Prefect validates a flow run's parameters against its deployment's schema, and its job
variables against the pool's, with ``jsonschema.validate``, which first checks the schema
itself against the JSON Schema meta-schema, every time: about a third of the server's work
while tasks are submitted (Conductor's task schema is large). The schemas are the same
between calls; ``remembered_schema_checks`` keeps the ones that passed (by their canonical
JSON, at most a few hundred) and checks any other as before. Validating the values is
unchanged.

Python's garbage collector now and then walks every container object the process holds (a
full, "generation 2", pass). Most of the server's are built while it starts (the app and its
routes, Prefect's and SQLAlchemy's models) and live as long as it does; walking them took
0.26-0.39 s each time on this 2-core VM, a pause of the whole API (every request in flight,
every state proposal: the slow starts of the dispatch benchmark). ``frozen_startup_objects``
collects once when the server is up, then freezes what is left (``gc.freeze``): full passes
walk only what was made since (30-50 ms here, a few times a minute while runs flow).

    python -m claude_conductor.tiers.prefect_server --host H --port P [...]

takes ``prefect server start``'s options.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import json
import logging
import sys
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

__all__ = [
    "frozen_startup_objects",
    "immediate_sqlite_transactions",
    "main",
    "remembered_schema_checks",
]

_REMEMBERED_SCHEMAS = 256

logger = logging.getLogger(__name__)


def immediate_sqlite_transactions() -> bool:
    """Make Prefect's SQLite configuration begin every transaction IMMEDIATE; False when this
    Prefect has no such hook (then it runs unchanged)."""
    from prefect.server.database import configurations

    config = getattr(configurations, "AioSqliteConfiguration", None)
    original = getattr(config, "begin_transaction", None)
    if config is None or original is None or getattr(original, "_conductor", False):
        return original is not None and getattr(original, "_conductor", False)

    @contextlib.asynccontextmanager
    async def begin_transaction(
        self: Any, session: Any, with_for_update: bool = False
    ) -> AsyncIterator[Any]:
        async with original(self, session, with_for_update=True) as transaction:
            yield transaction

    begin_transaction._conductor = True  # type: ignore[attr-defined]
    config.begin_transaction = begin_transaction
    return True


def remembered_schema_checks() -> bool:
    """Make the validator Prefect's server uses remember the schemas that passed its
    meta-schema check; False when this Prefect has no such validator (then it runs
    unchanged)."""
    try:
        from prefect.utilities.schema_tools import validation
    except ImportError:  # pragma: no cover - a dependency
        return False
    validator = getattr(validation, "_VALIDATOR", None)
    original = getattr(validator, "check_schema", None)
    if validator is None or original is None:
        return False
    if getattr(original, "_conductor", False):
        return True
    passed: OrderedDict[str, None] = OrderedDict()

    def check_schema(cls: Any, schema: Any, *args: Any, **kwargs: Any) -> None:
        try:
            key = json.dumps(schema, sort_keys=True) + repr((args, sorted(kwargs.items())))
        except (TypeError, ValueError):  # not plain JSON: no memory of it
            original(schema, *args, **kwargs)
            return
        if key in passed:
            passed.move_to_end(key)
            return
        original(schema, *args, **kwargs)  # raises for an invalid schema: never remembered
        passed[key] = None
        if len(passed) > _REMEMBERED_SCHEMAS:
            passed.popitem(last=False)

    check_schema._conductor = True  # type: ignore[attr-defined]
    validator.check_schema = classmethod(check_schema)
    return True


def frozen_startup_objects() -> bool:
    """Once uvicorn has started the app (Prefect's lifespan: migrations, services), collect and
    freeze the heap it built; False when this uvicorn has no such start-up step (then the
    server runs unchanged)."""
    try:
        from uvicorn.server import Server
    except ImportError:  # pragma: no cover - a dependency
        return False
    original = getattr(Server, "startup", None)
    if original is None or not inspect.iscoroutinefunction(original):
        return False
    if getattr(original, "_conductor", False):
        return True

    async def startup(self: Any, sockets: Any = None) -> None:
        await original(self, sockets=sockets)
        gc.collect()
        gc.freeze()

    startup._conductor = True  # type: ignore[attr-defined]
    Server.startup = startup  # type: ignore[method-assign]
    return True


def main(argv: list[str] | None = None) -> None:
    if not immediate_sqlite_transactions():
        logger.warning("this Prefect has no SQLite transaction hook; running it unchanged")
    if not remembered_schema_checks():
        logger.warning("this Prefect has no schema validator to patch; running it unchanged")
    if not frozen_startup_objects():
        logger.warning("this uvicorn has no start-up step to follow; running it unchanged")
    from prefect.cli import app

    sys.argv = ["prefect", "server", "start", *(sys.argv[1:] if argv is None else argv)]
    app()


if __name__ == "__main__":
    main()
