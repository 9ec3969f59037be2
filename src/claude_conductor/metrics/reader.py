"""Reading the fleet's numbers from the Prefect API, cheaply and restart-safe.

Gauges (queue depth, slots, running agents, workers) are a handful of count queries per
refresh. Counters are never kept only in memory: a reader adds up the finished conductor runs
Prefect records (and their published results), so a restarted exporter counts the same
totals again. The first refresh reads that history in pages (at most ``max_history_runs``
runs, newest first); later refreshes read only the runs that ended since the last one (with
an overlap, deduplicated by flow-run id).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterEndTime,
    FlowRunFilterStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort

from claude_conductor.client.rest import ApiReader, api_reader
from claude_conductor.client.tasks import api_client
from claude_conductor.errors import ConductorError
from claude_conductor.flows.identity import task_id_of
from claude_conductor.flows.results import read_results
from claude_conductor.metrics.records import record_of
from claude_conductor.metrics.snapshot import FleetSnapshot, PoolGauges, Tally
from claude_conductor.redaction import MASK, strip_url_credentials
from claude_conductor.settings import ConductorSettings
from claude_conductor.tiers.status import read_pool_status
from claude_conductor.work_pools.pools import PRIORITY_QUEUES, PoolKind, pool_name

__all__ = ["FleetReader", "snapshot"]

logger = logging.getLogger(__name__)

_PAGE = 200  # the most runs Prefect's read endpoints return at once
_FINAL = [StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED]
_ROLES: tuple[PoolKind, ...] = ("agents", "coordinators")
#: Finished runs are re-read this far behind the newest end time seen (late state writes).
OVERLAP = timedelta(minutes=2)


def _masked(text: str) -> str:
    """No ``user:password@`` of an API URL in what is shown or logged."""
    return strip_url_credentials(text, MASK)


def _conductor() -> FlowRunFilterTags:
    return FlowRunFilterTags(all_=["conductor"])


class FleetReader:
    """Keeps the tally between refreshes; ``refresh`` returns a new snapshot each time."""

    def __init__(self, settings: ConductorSettings, *, max_history_runs: int = 10_000) -> None:
        self.settings = settings
        self.max_history_runs = max_history_runs
        self.tally = Tally()
        self._watermark: datetime | None = None

    async def refresh(self, *, history: bool = True) -> FleetSnapshot:
        """Read the API once; an unreachable API gives ``api_up=False`` and the last counters."""
        now = datetime.now(UTC)
        base = {"taken_at": now, "api_url": _masked(self.settings.server.url)}
        try:
            async with (
                api_client(self.settings) as client,
                api_reader(self.settings, check=False) as api,
            ):
                pools = [
                    g for role in _ROLES if (g := await _pool_gauges(api, self.settings, role))
                ]
                submitted = await client.count_flow_runs(
                    flow_run_filter=FlowRunFilter(tags=_conductor())
                )
                started = await client.count_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        tags=_conductor(), start_time=FlowRunFilterStartTime(is_null_=False)
                    )
                )
                if history:
                    await self._read_finished(client)
        except (ConductorError, OSError) as exc:
            return self._down(str(exc), base)
        except Exception as exc:  # an API answering errors is down for our purposes
            logger.warning("reading the Prefect API failed: %s", _masked(str(exc)))
            return self._down(f"{type(exc).__name__}: {exc}", base)
        return FleetSnapshot(
            api_up=True,
            pools=pools,
            submitted=submitted,
            started=started,
            **base,
            **self.tally.parts(),
        )

    def _down(self, error: str, base: dict[str, Any]) -> FleetSnapshot:
        return FleetSnapshot(api_up=False, error=_masked(error), **base, **self.tally.parts())

    async def _read_finished(self, client: PrefectClient) -> None:
        began = datetime.now(UTC)
        since = None if self._watermark is None else self._watermark - OVERLAP
        cap = self.max_history_runs if since is None else None
        offset = 0
        while cap is None or offset < cap:
            limit = _PAGE if cap is None else min(_PAGE, cap - offset)
            page = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    tags=_conductor(),
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=_FINAL)),
                    end_time=FlowRunFilterEndTime(after_=since) if since else None,
                ),
                sort=FlowRunSort.END_TIME_DESC,
                limit=limit,
                offset=offset,
            )
            await self._add(client, page)
            offset += len(page)
            if len(page) < limit:
                break
        if self._watermark is None:  # nothing finished yet: only newer runs from now on
            self._watermark = began

    async def _add(self, client: PrefectClient, runs: list[FlowRun]) -> None:
        fresh = [r for r in runs if str(r.id) not in self.tally.seen]
        results = await read_results(client, [task_id_of(r) for r in fresh]) if fresh else {}
        for run in fresh:
            record = record_of(run, results.get(task_id_of(run)))
            if record is None:
                continue
            self.tally.add(record)
            if record.ended_at is not None and (
                self._watermark is None or record.ended_at > self._watermark
            ):
                self._watermark = record.ended_at


async def _pool_gauges(
    api: ApiReader, settings: ConductorSettings, role: PoolKind
) -> PoolGauges | None:
    name = pool_name(settings, role)
    status = await read_pool_status(api, name)
    if status is None:
        return None
    counts = await asyncio.gather(
        *(api.count_runs(name, ["SCHEDULED"], queues=[q.name]) for q in PRIORITY_QUEUES)
    )
    queued = {queue.name: count for queue, count in zip(PRIORITY_QUEUES, counts, strict=True)}
    slots = status.slots
    if slots is None:  # unlimited: report what the settings configure
        slots = settings.worker.agents if role == "agents" else settings.worker.coordinator_slots
    return PoolGauges(
        pool=role,
        name=name,
        slots=slots,
        busy=status.busy,
        running=status.running,
        queued=queued,
        workers_online=status.workers_online,
        paused=status.paused,
    )


async def snapshot(settings: ConductorSettings, *, history: bool = True) -> FleetSnapshot:
    """The fleet right now, read once (``history=False``: gauges only, a few cheap queries).
    The one function the exporter, ``conductor metrics show`` and status views share."""
    return await FleetReader(settings).refresh(history=history)
