"""Packing closed days' minute cells: log_counts → log_counts_packed, a row per tenant,
hour, service, level and environment with its minutes as arrays (sql/0018 says why).

Each janitor run packs every closed day (LATE_ENTRY_GRACE after its end, its minutes
compacted into the hourly and daily rollups) that still has cells in log_counts, tenant
by tenant, hour by hour, oldest first: at first the day whole, later the cells late
entries added to it. A tenant-hour moves in one statement (a DELETE … RETURNING feeding
the INSERT), so a cell is in exactly one of the two tables at every moment, and a
transaction holds at most an hour of one tenant's cells (a day of a tenant with
thousands of services would hold millions). A writer's upsert of a cell being moved
waits for the move's row lock, then adds a new cell to log_counts. No count changes, so
the coarser tables are left alone (the DELETE trigger is told so for the transaction).
Cut short (SIGTERM cancels the statement, services/janitor/__main__.py), the move rolls
back whole.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg

from services.janitor import metrics
from services.janitor.closed_partitions import LATE_ENTRY_GRACE
from services.janitor.policies import tenants_in_sql
from shared.compaction import read_watermark
from shared.rollups import DAY, HOUR, floor_to

log = logging.getLogger("janitor")

# Every tenant with cells before `closed`.
_TENANTS_SQL = f"""
SELECT tenant_id FROM ({tenants_in_sql("log_counts")}) AS t
WHERE EXISTS (SELECT 1 FROM log_counts c WHERE c.tenant_id = t.tenant_id AND c.minute < %(closed)s)
"""

# The hours before `closed` holding the tenant's cells, oldest first: one probe per hour,
# each before any of them moves (an hour moved leaves its index entries behind until
# vacuum, and finding the next oldest cell again from the start walked them all: the
# first pack of 7 days at 10M rows took 78 s that way, 47 s this way).
_HOURS_SQL = """
WITH RECURSIVE h AS (
    SELECT date_trunc('hour', min(minute), 'UTC') AS hour
    FROM log_counts WHERE tenant_id = %(tenant)s AND minute < %(closed)s
    UNION ALL
    SELECT (SELECT date_trunc('hour', min(c.minute), 'UTC') FROM log_counts c
            WHERE c.tenant_id = %(tenant)s AND c.minute >= h.hour + interval '1 hour'
              AND c.minute < %(closed)s)
    FROM h WHERE h.hour IS NOT NULL
)
SELECT hour FROM h WHERE hour IS NOT NULL
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
    moved = hours = 0
    for (tenant_id,) in conn.execute(_TENANTS_SQL, {"closed": closed}).fetchall():
        if not keep_going():
            break
        params = {"tenant": tenant_id, "closed": closed}
        for (hour,) in conn.execute(_HOURS_SQL, params).fetchall():
            if not keep_going():
                break
            cells = pack_tenant_minutes(conn, tenant_id, hour, hour + HOUR)
            metrics.PACKED_MINUTES.inc(cells)
            log.debug("packed %d minute cells of tenant %s at %s", cells, tenant_id, hour)
            moved += cells
            hours += 1
    if moved:
        # One line a run: late entries would otherwise log a tenant-hour every run.
        log.info("packed %d minute cells of %d tenant-hour(s)", moved, hours)
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
