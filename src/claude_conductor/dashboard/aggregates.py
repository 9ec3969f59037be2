"""Numbers and chart data from the tasks frame (see ``data.TASK_COLUMNS``). Pure pandas.

Fan-out parents carry the sum of their subtasks' costs, so every cost and token figure leaves
them out (their subtasks are counted instead); counts and durations keep them.
"""

from __future__ import annotations

from typing import Literal

import pandas as pd

__all__ = [
    "FINAL_STATUSES",
    "OK_STATUSES",
    "cost_by_kind",
    "cost_per_day",
    "most_expensive",
    "outcomes_over_time",
    "queue_depth",
    "slowest",
    "status_counts",
    "success_rate",
    "time_bucket",
]

FINAL_STATUSES = ("succeeded", "failed", "timed_out", "cancelled", "needs_attention")
OK_STATUSES = ("succeeded",)
_JUDGED = ("succeeded", "failed", "timed_out", "needs_attention")  # cancelled: the user's call

Bucket = Literal["h", "D"]


def _costed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[~frame["is_fanout"].astype(bool)]


def _when(frame: pd.DataFrame) -> pd.Series:
    """When a task counts as having happened: finished, else started, else created."""
    return frame["finished"].fillna(frame["started"]).fillna(frame["created"])


def status_counts(frame: pd.DataFrame) -> dict[str, int]:
    """How many tasks are in each status."""
    counts = frame["status"].value_counts()
    return {str(k): int(v) for k, v in counts.items()}


def success_rate(frame: pd.DataFrame) -> float | None:
    """Succeeded / (succeeded + failed + timed out + needs attention); None with none ended."""
    judged = frame[frame["status"].isin(_JUDGED)]
    if judged.empty:
        return None
    return float((judged["status"] == "succeeded").sum()) / float(len(judged))


def queue_depth(frame: pd.DataFrame, *, all_priorities: bool = False) -> pd.DataFrame:
    """Waiting tasks per priority, most urgent first: columns ``priority``, ``queued``.
    With ``all_priorities``, every priority from 10 to 1 is listed, empty ones as 0."""
    queued = frame[frame["status"] == "queued"]
    counts = queued.groupby("priority").size()
    if all_priorities:
        counts = counts.reindex(range(10, 0, -1), fill_value=0)
    out = counts.rename("queued").rename_axis("priority").reset_index()
    out["queued"] = out["queued"].astype(int)
    return out.sort_values("priority", ascending=False).reset_index(drop=True)


def time_bucket(frame: pd.DataFrame) -> Bucket:
    """Hours when the tasks span under two days, else days."""
    when = _when(frame).dropna()
    if when.empty or (when.max() - when.min()) < pd.Timedelta(days=2):
        return "h"
    return "D"


def outcomes_over_time(frame: pd.DataFrame, bucket: Bucket | None = None) -> pd.DataFrame:
    """Ended tasks per time bucket and status: columns ``period``, ``status``, ``tasks``."""
    ended = frame[frame["status"].isin(FINAL_STATUSES)].copy()
    if ended.empty:
        return pd.DataFrame({"period": [], "status": [], "tasks": []})
    ended["period"] = _when(ended).dt.floor(bucket or time_bucket(frame))
    out = ended.groupby(["period", "status"]).size().rename("tasks").reset_index()
    return out.sort_values(["period", "status"]).reset_index(drop=True)


def cost_per_day(frame: pd.DataFrame) -> pd.DataFrame:
    """Cost and tokens of ended tasks per UTC day and task kind: ``day``, ``kind``,
    ``cost_usd``, ``input_tokens``, ``output_tokens``, ``tokens``, ``tasks``."""
    costed = _costed(frame)
    costed = costed[costed["status"].isin(FINAL_STATUSES)].copy()
    columns = ["day", "kind", "cost_usd", "input_tokens", "output_tokens", "tokens", "tasks"]
    if costed.empty:
        return pd.DataFrame({c: [] for c in columns})
    costed["day"] = _when(costed).dt.floor("D")
    out = (
        costed.groupby(["day", "kind"])
        .agg(
            cost_usd=("cost_usd", "sum"),
            input_tokens=("input_tokens", "sum"),
            output_tokens=("output_tokens", "sum"),
            tokens=("tokens", "sum"),
            tasks=("task_id", "count"),
        )
        .reset_index()
    )
    return out.sort_values(["day", "kind"]).reset_index(drop=True)[columns]


def cost_by_kind(frame: pd.DataFrame) -> pd.DataFrame:
    """Totals of ended tasks per kind: ``kind``, ``tasks``, ``cost_usd``, ``tokens``,
    ``avg_cost_usd``."""
    costed = _costed(frame)
    costed = costed[costed["status"].isin(FINAL_STATUSES)]
    if costed.empty:
        return pd.DataFrame(
            {c: [] for c in ("kind", "tasks", "cost_usd", "tokens", "avg_cost_usd")}
        )
    out = (
        costed.groupby("kind")
        .agg(tasks=("task_id", "count"), cost_usd=("cost_usd", "sum"), tokens=("tokens", "sum"))
        .reset_index()
    )
    out["avg_cost_usd"] = out["cost_usd"] / out["tasks"]
    return out.sort_values("cost_usd", ascending=False).reset_index(drop=True)


_TOP_COLUMNS = ["task_id", "title", "kind", "status", "duration_seconds", "cost_usd", "turns"]


def slowest(frame: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """The ``n`` longest ended tasks."""
    ended = frame[frame["status"].isin(FINAL_STATUSES)]
    top = ended.sort_values("duration_seconds", ascending=False).head(n)
    return top[_TOP_COLUMNS].reset_index(drop=True)


def most_expensive(frame: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """The ``n`` costliest tasks with a cost (fan-out parents left out)."""
    costed = _costed(frame)
    costed = costed[costed["cost_usd"] > 0]
    top = costed.sort_values("cost_usd", ascending=False).head(n)
    return top[_TOP_COLUMNS].reset_index(drop=True)
