"""Rollup compaction: add the minutes before a new watermark to the hourly and daily tables.

The writer upserts every batch's cells into log_counts, and into the hourly and daily
tables only for minutes before the watermark (sql/0007_rollup_compaction.sql). This moves
the watermark forward, adding the minutes it passes to log_counts_hourly and
log_counts_daily once per cell, so that for every minute before the watermark they hold
exactly log_counts summed by hour and by day. The janitor runs it every
ROLLUP_COMPACT_INTERVAL seconds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

# Minutes still being written are left alone: a live stream's entries are stamped "now",
# so the minute before this one is complete but for stragglers (which take the writer's
# late path, still counted exactly once).
SETTLE = timedelta(minutes=1)
# One transaction covers at most this much: after a long outage the janitor catches up
# in steps that keep writers waiting briefly, not for the whole backlog at once.
MAX_STEP = timedelta(hours=6)

_ADD_SQL = """
INSERT INTO {table} AS t (tenant_id, {column}, service_name, level, environment, count, bytes)
SELECT tenant_id, date_trunc('{column}', minute, 'UTC'), service_name, level, environment,
       sum(count), sum(bytes)
FROM log_counts WHERE minute >= %(lo)s AND minute < %(hi)s
GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
ON CONFLICT (tenant_id, {column}, service_name, level, environment)
DO UPDATE SET count = t.count + excluded.count, bytes = t.bytes + excluded.bytes
"""
_HOURLY = _ADD_SQL.format(table="log_counts_hourly", column="hour")
_DAILY = _ADD_SQL.format(table="log_counts_daily", column="day")


WATERMARK_SQL = "SELECT compacted_until FROM rollup_watermark"


def watermark_of(row: tuple[datetime] | None) -> datetime:
    """The watermark from WATERMARK_SQL's row (sync or async callers alike)."""
    if row is None:
        raise RuntimeError("rollup_watermark is empty: apply the migrations")
    return row[0]


def read_watermark(conn: psycopg.Connection) -> datetime:
    return watermark_of(conn.execute(WATERMARK_SQL).fetchone())


def compact_step(conn: psycopg.Connection, now: datetime | None = None) -> datetime | None:
    """Move the watermark towards `now - SETTLE` (whole minutes) by at most MAX_STEP, in one
    transaction; the new watermark, or None when there was nothing to do. `conn` must not
    be in a transaction."""
    now = now or datetime.now(UTC)
    target = (now - SETTLE).replace(second=0, microsecond=0)
    with conn.transaction():
        # Exclusive: waits for writers' transactions that read the old watermark, and
        # holds back new ones until the new watermark is committed.
        conn.execute("SELECT pg_advisory_xact_lock(rollup_lock_key())")
        lo = read_watermark(conn)
        hi = min(target, lo + MAX_STEP)
        if hi <= lo:
            return None
        window = {"lo": lo, "hi": hi}
        conn.execute(_HOURLY, window)
        conn.execute(_DAILY, window)
        conn.execute("UPDATE rollup_watermark SET compacted_until = %s", (hi,))
    return hi


def compact(conn: psycopg.Connection, now: datetime | None = None) -> int:
    """Compact up to `now - SETTLE`, step by step; returns the steps taken."""
    steps = 0
    while compact_step(conn, now) is not None:
        steps += 1
    return steps
