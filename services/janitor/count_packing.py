"""Packing closed days' minute cells: log_counts → log_counts_packed, a row per tenant,
hour, service, level and environment with its minutes as arrays (sql/0018 says why).

Each janitor run packs every closed day (LATE_ENTRY_GRACE after its end, its minutes
compacted into the hourly and daily rollups) that still has cells in log_counts, per
tenant and day, oldest first: at first the day whole, later the cells late entries
added to it. A tenant-day moves in one statement (a DELETE … RETURNING feeding the
INSERT), so a cell is in exactly one of the two tables at every moment: a writer's
upsert of a cell being moved waits for the move's row lock, then adds a new cell to
log_counts. No count changes, so the coarser tables are left alone (the DELETE trigger
is told so for the transaction). Cut short (SIGTERM cancels the statement,
services/janitor/__main__.py), the move rolls back whole.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg

from services.janitor import metrics
from services.janitor.closed_partitions import LATE_ENTRY_GRACE
from shared.compaction import read_watermark
from shared.rollups import DAY, floor_to

log = logging.getLogger("janitor")

# Each tenant's oldest cell before `closed`: a loose index scan over log_counts' primary
# key (tenant_id, minute, …), one probe per tenant instead of reading every cell.
_OLDEST_SQL = """
WITH RECURSIVE t AS (
    (SELECT tenant_id FROM log_counts ORDER BY tenant_id LIMIT 1)
    UNION ALL
    SELECT (SELECT c.tenant_id FROM log_counts c WHERE c.tenant_id > t.tenant_id
            ORDER BY c.tenant_id LIMIT 1)
    FROM t WHERE t.tenant_id IS NOT NULL
)
SELECT tenant_id, oldest FROM (
    SELECT tenant_id, (SELECT min(c.minute) FROM log_counts c
                       WHERE c.tenant_id = t.tenant_id AND c.minute < %(closed)s) AS oldest
    FROM t WHERE tenant_id IS NOT NULL
) AS found
WHERE oldest IS NOT NULL
ORDER BY oldest, tenant_id
"""

_MOVE_SQL = """
WITH moved AS (
    DELETE FROM log_counts
    WHERE tenant_id = %(tenant)s AND minute >= %(lo)s AND minute < %(hi)s
    RETURNING tenant_id, minute, service_name, level, environment, count, bytes
),
packed AS (
    INSERT INTO log_counts_packed
        (tenant_id, hour, service_name, level, environment, minutes, counts, bytes)
    SELECT tenant_id, hour, service_name, level, environment,
           array_agg(past ORDER BY past), array_agg(count ORDER BY past),
           array_agg(bytes ORDER BY past)
    FROM (
        SELECT tenant_id, date_trunc('hour', minute, 'UTC') AS hour, service_name, level,
               environment, extract(minute FROM minute AT TIME ZONE 'UTC')::smallint AS past,
               count::integer AS count, bytes
        FROM moved
    ) AS cells
    GROUP BY tenant_id, hour, service_name, level, environment
    RETURNING cardinality(minutes) AS cells
)
SELECT coalesce(sum(cells), 0) FROM packed
"""


def pack_closed_minutes(
    conn: psycopg.Connection,
    *,
    now: datetime | None = None,
    keep_going: Callable[[], bool] = lambda: True,
) -> int:
    """Pack the minute cells of every closed day as of `now` (default: the clock), while
    `keep_going()`; returns the cells moved. `conn` must be in autocommit mode."""
    now = now or datetime.now(UTC)
    closed = floor_to(min(now - LATE_ENTRY_GRACE, read_watermark(conn)), DAY)
    moved = days = 0
    while keep_going() and (todo := conn.execute(_OLDEST_SQL, {"closed": closed}).fetchall()):
        for tenant_id, oldest in todo:
            if not keep_going():
                break
            day = floor_to(oldest, DAY)
            cells = pack_tenant_minutes(conn, tenant_id, day, min(day + DAY, closed))
            metrics.PACKED_MINUTES.inc(cells)
            log.debug("packed %d minute cells of tenant %s dated %s", cells, tenant_id,
                      day.date())  # fmt: skip
            moved += cells
            days += 1
    if moved:
        # One line a run: late entries would otherwise log a tenant-day every run.
        log.info("packed %d minute cells of %d tenant-day(s)", moved, days)
    return moved


def pack_tenant_minutes(
    conn: psycopg.Connection, tenant_id: uuid.UUID, lo: datetime, hi: datetime
) -> int:
    """Move the tenant's cells of [lo, hi) into log_counts_packed, in one transaction;
    returns how many there were."""
    with conn.transaction():
        conn.execute("SET LOCAL minisource.moving_minutes = 'on'")
        params = {"tenant": tenant_id, "lo": lo, "hi": hi}
        row = conn.execute(_MOVE_SQL, params, prepare=False).fetchone()
    return int(row[0]) if row else 0
