"""The time windows of the counting endpoints: defaults, open ends, bucket widths."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from services.gateway.query.cache import filter_key
from shared import rollups
from shared.errors import FieldError, ValidationFailed
from shared.filters import CompiledFilter, LogFilter, compile_filter

STATS_WINDOW = timedelta(hours=24)
INTERVALS = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "1d": timedelta(days=1),
}
Interval = Literal["1m", "5m", "15m", "1h", "6h", "1d"]
# 14 days of minutes: a larger histogram is not readable and costs as much as a page scan.
MAX_BUCKETS = 20_160


@dataclass(frozen=True, slots=True)
class Window:
    """A filter with its window settled: `counted` has a start and a finite end for
    counting; `requested_end` is the end as asked (None: open)."""

    raw: LogFilter
    compiled: CompiledFilter
    counted: CompiledFilter
    requested_end: datetime | None
    now: datetime

    @classmethod
    def of(cls, raw: LogFilter, default: timedelta) -> Window:
        now = datetime.now(UTC)
        compiled = compile_filter(raw, now)
        windowed = compiled.with_default_window(default, now)
        latest = now + rollups.FURTHEST_AHEAD  # no entry is dated later: an open end
        counted = replace(windowed, end=windowed.end or max(latest, windowed.start or latest))
        return cls(raw, compiled, counted, compiled.end, now)

    @property
    def start(self) -> datetime:
        assert self.counted.start is not None
        return self.counted.start

    def cache_key(self, **extra: Any) -> dict[str, Any]:
        return {"filter": filter_key(self.raw, self.compiled), **extra}


def bucket_times(w: Window, interval: timedelta, data_last: datetime | None) -> list[datetime]:
    """Every bucket of the window: through the end's bucket, or for an open window
    through now's (or the newest data's, when entries are dated ahead)."""
    first = rollups.floor_to(w.start, interval)
    if w.requested_end is not None:
        last = rollups.floor_to(w.requested_end - timedelta(microseconds=1), interval)
    else:
        last = rollups.floor_to(max(w.now, data_last or w.now), interval)
    times = []
    t = first
    while t <= last:  # added up rather than `first + interval * i`: a third of the time
        times.append(t)
        t += interval
    return times


def check_bucket_count(w: Window, interval: timedelta, name: str) -> None:
    end = w.requested_end or w.now
    buckets = (end - rollups.floor_to(w.start, interval)) / interval
    if buckets > MAX_BUCKETS:
        raise ValidationFailed(
            f"{buckets:.0f} buckets of {name} is more than {MAX_BUCKETS}",
            errors=[
                FieldError("interval", "choose a wider interval or a shorter time range"),
            ],
        )
