"""The standalone tier's Prefect server: ``prefect server start`` itself, with one change to
how it uses SQLite: every transaction it begins is ``BEGIN IMMEDIATE``.

Prefect begins most transactions ``DEFERRED``: one that reads, then writes after another
connection has written, gets ``SQLITE_BUSY`` at once (SQLite cannot wait it out: its snapshot
is stale), and the API answers 503. Concurrent submissions, a worker and several flow runs
writing at once hit this constantly (about 19 of 20 simultaneous ``create_flow_run`` calls
were refused on this machine); clients retry after a back-off of seconds. Begun
``IMMEDIATE``, a transaction takes the write lock first and waits for it (Prefect's
``busy_timeout``, 60 s) instead of failing: writers queue, which SQLite does anyway, since it
has one writer at a time. Reads outside transactions are unchanged. PostgreSQL is untouched.

    python -m claude_conductor.tiers.standalone.server --host H --port P [...]

takes ``prefect server start``'s options.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["immediate_sqlite_transactions", "main"]

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


def main(argv: list[str] | None = None) -> None:
    if not immediate_sqlite_transactions():
        logger.warning("this Prefect has no SQLite transaction hook; running it unchanged")
    from prefect.cli import app

    sys.argv = ["prefect", "server", "start", *(sys.argv[1:] if argv is None else argv)]
    app()


if __name__ == "__main__":
    main()
