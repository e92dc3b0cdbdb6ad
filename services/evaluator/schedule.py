"""When rounds run: ticks of ALERT_EVAL_INTERVAL seconds, counted from the Unix epoch.

The n-th tick covers [n * interval, (n + 1) * interval) and is named by its start, in
Unix seconds: every evaluator derives the same name from its clock, so
`log_alerts.evaluated_tick` can say "done for this tick" to all of them. Naming a tick by
its start rather than by n keeps names increasing when ALERT_EVAL_INTERVAL changes (with
n, going from 30 to 60 s would halve the numbers, and rules claimed at the old, larger
numbers would wait years to be claimed again).

The arq cron fires at the start of each tick: the interval divides a minute or an hour
(Settings refuses anything else), so the start times are a fixed set of seconds (or
minutes) of every minute (or hour).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


def tick_of(now: datetime, interval_seconds: int) -> int:
    """The tick `now` falls in, named by its start (Unix seconds)."""
    return int(now.timestamp() // interval_seconds) * interval_seconds


@dataclass(frozen=True, slots=True)
class CronTimes:
    """arq's `cron(second=..., minute=...)` arguments; None means "every"."""

    second: set[int]
    minute: set[int] | None


def cron_times(interval_seconds: int) -> CronTimes:
    """The seconds and minutes at which ticks start (UTC, so that ticks line up with
    `tick_of`: a +05:45 local zone would shift minutes, never seconds)."""
    if 60 % interval_seconds == 0:
        return CronTimes(second=set(range(0, 60, interval_seconds)), minute=None)
    if interval_seconds % 60 == 0 and 3600 % interval_seconds == 0:
        return CronTimes(second={0}, minute=set(range(0, 60, interval_seconds // 60)))
    raise ValueError(
        f"an interval of {interval_seconds} s divides neither a minute nor an hour; "
        "ALERT_EVAL_INTERVAL allows only those"
    )
