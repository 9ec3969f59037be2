"""The fleet's numbers at one moment: ``FleetSnapshot`` (values, printable as JSON) and the
``Tally`` that adds finished tasks up into its counters and histograms. Pure."""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from datetime import datetime

from prometheus_client.utils import floatToGoString
from pydantic import BaseModel, ConfigDict, Field

from claude_conductor.metrics.records import TaskRecord

__all__ = [
    "DURATION_BUCKETS",
    "START_LATENCY_BUCKETS",
    "CostTotal",
    "ExitCount",
    "FleetSnapshot",
    "HistogramData",
    "PoolGauges",
    "Tally",
    "TaskCount",
    "TokenTotal",
]

START_LATENCY_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
DURATION_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class PoolGauges(_Frozen):
    """One work pool right now."""

    pool: str = Field(description="Pool role: agents or coordinators.")
    name: str = Field(description="The Prefect work pool's name.")
    slots: int = Field(description="Concurrency limit (agent slots).")
    busy: int = Field(description="Runs holding a slot (Pending or Running).")
    running: int = Field(description="Runs in Running state.")
    queued: dict[str, int] = Field(description="Scheduled runs per priority queue.")
    workers_online: int = Field(description="Workers with a recent heartbeat.")
    paused: bool = Field(default=False, description="A paused pool hands out no runs.")

    @property
    def queue_depth(self) -> int:
        return sum(self.queued.values())


class TaskCount(_Frozen):
    kind: str
    status: str
    count: int


class CostTotal(_Frozen):
    kind: str
    model: str
    usd: float


class TokenTotal(_Frozen):
    kind: str
    model: str
    type: str = Field(description="input or output.")
    tokens: int


class ExitCount(_Frozen):
    reason: str
    count: int


class HistogramData(_Frozen):
    """A Prometheus-style histogram: per-bucket counts (not cumulative) plus +Inf."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...] = Field(description="len(bounds) + 1 counts, the last for +Inf.")
    sum: float
    count: int

    def cumulative(self) -> list[tuple[str, int]]:
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append((floatToGoString(bound), running))  # type: ignore[no-untyped-call]
        return out


class FleetSnapshot(_Frozen):
    """Everything the exporter, ``conductor metrics show`` and status views report."""

    taken_at: datetime = Field(description="When it was read.")
    api_url: str = Field(description="The Prefect API it was read from.")
    api_up: bool = Field(description="Whether the API answered.")
    pools: list[PoolGauges] = Field(default_factory=list, description="Pools right now.")
    submitted: int = Field(default=0, description="Conductor flow runs ever created.")
    started: int = Field(default=0, description="Conductor flow runs that ever started.")
    tasks: list[TaskCount] = Field(default_factory=list, description="Finished, by kind+status.")
    cost: list[CostTotal] = Field(default_factory=list, description="USD by kind and model.")
    tokens: list[TokenTotal] = Field(default_factory=list, description="Tokens by kind/model.")
    exits: list[ExitCount] = Field(default_factory=list, description="Agent exits by reason.")
    start_latency: HistogramData | None = Field(default=None, description="Submit -> start.")
    duration: HistogramData | None = Field(default=None, description="Start -> end.")
    finished_seen: int = Field(default=0, description="Finished runs the counters include.")
    error: str | None = Field(default=None, description="Why the API could not be read.")

    def pool(self, role: str) -> PoolGauges | None:
        return next((p for p in self.pools if p.pool == role), None)


class _Histogram:
    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def data(self) -> HistogramData:
        return HistogramData(
            bounds=self.bounds, counts=tuple(self.counts), sum=self.sum, count=self.count
        )


class Tally:
    """Counters and histograms over the finished tasks added so far (each run once)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.tasks: Counter[tuple[str, str]] = Counter()
        self.cost: defaultdict[tuple[str, str], float] = defaultdict(float)
        self.tokens: Counter[tuple[str, str, str]] = Counter()
        self.exits: Counter[str] = Counter()
        self.start_latency = _Histogram(START_LATENCY_BUCKETS)
        self.duration = _Histogram(DURATION_BUCKETS)

    def add(self, record: TaskRecord) -> bool:
        """Count ``record`` unless its run was counted already; whether it was new."""
        if record.flow_run_id in self.seen:
            return False
        self.seen.add(record.flow_run_id)
        self.tasks[(record.kind, record.status.value)] += 1
        if record.is_agent:
            self.exits[record.reason] += 1
        if not record.is_fanout:
            self.cost[(record.kind, record.model)] += record.cost_usd
            self.tokens[(record.kind, record.model, "input")] += record.input_tokens
            self.tokens[(record.kind, record.model, "output")] += record.output_tokens
            if record.start_latency_seconds is not None:
                self.start_latency.observe(record.start_latency_seconds)
            if record.duration_seconds is not None:
                self.duration.observe(record.duration_seconds)
        return True

    def parts(self) -> dict[str, object]:
        """The counter fields of a ``FleetSnapshot``."""
        return {
            "tasks": [
                TaskCount(kind=k, status=s, count=n) for (k, s), n in sorted(self.tasks.items())
            ],
            "cost": [CostTotal(kind=k, model=m, usd=v) for (k, m), v in sorted(self.cost.items())],
            "tokens": [
                TokenTotal(kind=k, model=m, type=t, tokens=int(v))
                for (k, m, t), v in sorted(self.tokens.items())
            ],
            "exits": [ExitCount(reason=r, count=n) for r, n in sorted(self.exits.items())],
            "start_latency": self.start_latency.data(),
            "duration": self.duration.data(),
            "finished_seen": len(self.seen),
        }
