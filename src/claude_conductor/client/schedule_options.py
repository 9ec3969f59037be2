"""What ``conductor schedule add`` is told, checked before anything is created: when a
schedule fires (a cron expression or an interval, in a time zone) and its name. Pure: each
problem is one ``InputError`` naming the option, the value and the fix.
"""

from __future__ import annotations

import difflib
import re
from datetime import timedelta
from zoneinfo import available_timezones

from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from claude_conductor.errors import InputError
from claude_conductor.work_pools import deployments

__all__ = ["BUILTIN_NAMES", "Timing", "parse_timing", "schedule_name"]

BUILTIN_NAMES = frozenset(d.name for d in deployments.DEPLOYMENTS)
"""Conductor's own deployment names: no schedule may take one."""
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_CRON_HELP = (
    'five fields: minute hour day-of-month month day-of-week, e.g. "0 2 * * *" for 02:00 '
    'every day or "*/15 * * * 1-5" for every 15 minutes on weekdays'
)


class Timing(BaseModel):
    """When a schedule fires: a cron expression or a fixed interval, in a time zone."""

    model_config = ConfigDict(frozen=True)

    cron: str | None = Field(default=None, description="Cron expression (5 fields).")
    interval_seconds: float | None = Field(default=None, description="Seconds between runs.")
    timezone: str = Field(default="UTC", description="IANA time zone, e.g. Europe/Paris.")

    def to_prefect(self) -> CronSchedule | IntervalSchedule:
        if self.cron is not None:
            return CronSchedule(cron=self.cron, timezone=self.timezone)
        assert self.interval_seconds is not None
        return IntervalSchedule(
            interval=timedelta(seconds=self.interval_seconds), timezone=self.timezone
        )

    def describe(self) -> str:
        if self.cron is not None:
            return f"cron {self.cron} ({self.timezone})"
        return f"every {_seconds_text(self.interval_seconds or 0)}"


def _seconds_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"


def parse_timing(
    *, cron: str | None, interval_seconds: float | None, timezone: str | None
) -> Timing:
    """Validate the options of ``schedule add``; ``InputError`` naming the option otherwise."""
    if (cron is None) == (interval_seconds is None):
        raise InputError(
            "give exactly one of --cron EXPR (e.g. --cron '0 2 * * *') or --interval SECONDS",
            field="--cron",
        )
    tz = (timezone or "UTC").strip()
    zones = sorted(available_timezones())  # what Prefect's schedules accept
    if tz not in zones:
        close = difflib.get_close_matches(tz, zones, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else "use an IANA name"
        raise InputError(
            f"--timezone {tz!r} is not a known time zone; {hint} "
            "(e.g. UTC, Europe/Paris, America/New_York)",
            field="--timezone",
            value=tz,
        )
    if cron is not None:
        expr = " ".join(cron.split())
        try:
            CronSchedule(cron=expr, timezone=tz)
        except ValidationError:
            raise InputError(
                f"--cron {cron!r} is not a valid cron expression; use {_CRON_HELP}",
                field="--cron",
                value=cron,
            ) from None
        if len(expr.split()) != 5:
            raise InputError(
                f"--cron {cron!r} has {len(expr.split())} fields; use {_CRON_HELP}",
                field="--cron",
                value=cron,
            )
        return Timing(cron=expr, timezone=tz)
    assert interval_seconds is not None
    if not interval_seconds >= 1 or interval_seconds != interval_seconds:  # NaN too
        raise InputError(
            f"--interval {interval_seconds:g} must be a number of seconds of at least 1 "
            "(e.g. --interval 3600 for hourly)",
            field="--interval",
            value=interval_seconds,
        )
    return Timing(interval_seconds=float(interval_seconds), timezone=tz)


def schedule_name(name: str | None, fallback: str) -> str:
    """The schedule's name: ``name``, else ``fallback`` (the task file's stem) made into one;
    ``InputError`` naming --name when it is unusable."""
    if name is None:
        name = re.sub(r"[^a-z0-9-]+", "-", fallback.lower()).strip("-")[:63]
        if not name:
            raise InputError(
                "cannot make a schedule name from the task file's name; give --name NAME",
                field="--name",
            )
    if not _NAME_RE.match(name):
        raise InputError(
            f"--name {name!r} is not a usable schedule name: use 1-63 lowercase letters, "
            "digits and '-', starting with a letter or digit (e.g. --name nightly-review)",
            field="--name",
            value=name,
        )
    if name in BUILTIN_NAMES:
        raise InputError(
            f"--name {name!r} is one of Conductor's own deployments; choose another name",
            field="--name",
            value=name,
        )
    return name
