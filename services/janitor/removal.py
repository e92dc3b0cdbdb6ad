"""Removing one tenant's rows of one UTC day, and their rollup cells, without a long
transaction or a table-wide scan.

Rows go in batches of RETENTION_DELETE_BATCH, oldest first, each batch its own short
transaction: the batch's row addresses are read through the tenant+time index of the
partition holding the day (no other partition is read), then deleted by address (a TID
scan). In the same
transaction go the tenant's log_counts minutes that the batch emptied, so that stats and
storage never count rows already gone for more than the minute a batch ends in. The
DELETE trigger on log_counts (sql/0007_rollup_compaction.sql) takes those minutes out of
log_counts_by_level, log_counts_hourly and log_counts_daily. Minutes of closed days are
packed per hour (sql/0018_packed_minutes.sql): a packed hour goes, through its own
trigger, with the batch that empties the whole hour, so stats may count a removal's rows
for up to the hour a batch ends in.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg import sql

from services.janitor import failpoint
from services.janitor.pacing import UNPACED, Pace
from services.janitor.partitions import partition_holding
from shared.rollups import HOUR, floor_to

log = logging.getLogger(__name__)

DAY = timedelta(days=1)
MINUTE = timedelta(minutes=1)

# Named partition, not log_entries: an address (ctid) is only unique within one table.
# The subquery walks the partition's tenant+time index from `lo`; the DELETE then fetches
# exactly those rows by address (a TID scan). With the tenant and time conditions repeated
# outside, the planner was seen to prefer re-reading the day through an index, filtering
# on the addresses: every batch would then walk the whole day again.
_ROWS_SQL = """
WITH gone AS (
    DELETE FROM {table}
    WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM {table}
        WHERE tenant_id = %(tenant)s AND "timestamp" >= %(lo)s AND "timestamp" < %(hi)s
        ORDER BY "timestamp" LIMIT %(batch)s))
    RETURNING "timestamp"
)
SELECT count(*), max("timestamp") FROM gone
"""


def rows_statement(partition: str) -> sql.Composed:
    """One batch's DELETE on `partition` (which holds the whole day: partitions are UTC
    days or months)."""
    return sql.SQL(_ROWS_SQL).format(table=sql.Identifier(partition))


_COUNTS_SQL = """
WITH gone AS (
    DELETE FROM log_counts
    WHERE tenant_id = %(tenant)s AND minute >= %(lo)s AND minute < %(hi)s
    RETURNING bytes
)
SELECT count(*), coalesce(sum(bytes), 0) FROM gone
"""
# The same in bounded batches, by address (log_counts is not partitioned: an address
# names one cell), found through the primary key (tenant_id, minute, …).
_COUNTS_BATCH_SQL = """
WITH gone AS (
    DELETE FROM log_counts
    WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM log_counts
        WHERE tenant_id = %(tenant)s AND minute >= %(lo)s AND minute < %(hi)s
        LIMIT %(batch)s))
    RETURNING bytes
)
SELECT count(*), coalesce(sum(bytes), 0) FROM gone
"""
# Packed hours wholly before `hi`, from the hour holding `lo` (callers have removed the
# rows before `lo` already): a row per tenant, hour, service, level and environment.
_PACKED_SQL = """
WITH gone AS (
    DELETE FROM log_counts_packed
    WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM log_counts_packed
        WHERE tenant_id = %(tenant)s AND hour >= %(lo_hour)s
          AND hour <= %(hi)s - interval '1 hour'
        LIMIT %(batch)s))
    RETURNING (SELECT sum(b) FROM unnest(bytes) AS b) AS bytes
)
SELECT count(*), coalesce(sum(bytes), 0) FROM gone
"""

# Cells of the coarser tables the trigger left behind: none when they agree with
# log_counts. Only for ranges with no minutes left; taken under the rollup lock in shared
# mode, as every delete from the rollups is (sql/0007_rollup_compaction.sql).
_LEFTOVER_CELLS_SQL = [
    "DELETE FROM log_counts_hourly WHERE tenant_id = %(tenant)s AND hour >= %(lo)s "
    "AND hour < %(hi)s",
    "DELETE FROM log_counts_daily WHERE tenant_id = %(tenant)s AND day >= %(lo)s AND day < %(hi)s",
    "DELETE FROM log_counts_by_level WHERE tenant_id = %(tenant)s AND minute >= %(lo)s "
    "AND minute < %(hi)s",
]

_COUNT_ROWS_SQL = """
SELECT count(*) FROM log_entries
WHERE tenant_id = %s AND "timestamp" >= %s AND "timestamp" < %s
"""


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _minute(ts: datetime) -> datetime:
    return ts.replace(second=0, microsecond=0)


@dataclass(frozen=True, slots=True)
class Deleted:
    rows: int
    bytes: int  # log_counts bytes of the minutes deleted (README, "Retention")
    complete: bool  # False when stopped early: rows of the day are left


def count_rows(conn: psycopg.Connection, tenant_id: uuid.UUID, day: date) -> int:
    start = day_start(day)
    row = conn.execute(_COUNT_ROWS_SQL, (tenant_id, start, start + DAY), prepare=False).fetchone()
    return int(row[0]) if row else 0


def delete_tenant_day(
    conn: psycopg.Connection,
    tenant_id: uuid.UUID,
    day: date,
    batch: int,
    keep_going: Callable[[], bool] = lambda: True,
    pace: Pace = UNPACED,
) -> Deleted:
    """Delete the tenant's rows dated `day` (UTC) and their rollup cells. `conn` must be in
    autocommit mode (each batch commits on its own). `keep_going` is asked before every
    batch: stopped early, what is left is removed by the next call. `pace` rests after
    each batch (services/janitor/pacing.py)."""
    start = day_start(day)
    end = start + DAY
    lo, counted_to = start, start
    rows = size = 0
    partition = partition_holding(conn, start)
    # No partition: no rows, only (stray) rollup cells to remove.
    statement = rows_statement(partition) if partition else None
    while statement is not None:
        if not keep_going():
            return Deleted(rows, size, complete=False)
        params = {"tenant": tenant_id, "lo": lo, "hi": end, "batch": batch}
        with conn.transaction():
            found = conn.execute(statement, params, prepare=False).fetchone()
            assert found is not None
            n, newest = int(found[0]), found[1]
            rows += n
            done = n < batch
            if n:
                # Every row before the newest one's minute is gone (they went oldest
                # first); that minute itself may still hold rows, unless none are left.
                upto = _minute(newest) + (MINUTE if done else timedelta(0))
                if upto > counted_to:
                    size += delete_counts(conn, tenant_id, counted_to, upto)
                    counted_to = upto
        # Crash tests: killed here, a day is half deleted (its archive complete).
        failpoint.reached("retention_after_delete_batch")
        if done:
            break
        pace.rest()
        # Rows at exactly `newest` may remain: >=, and the next batch walks no dead entries.
        lo = newest
    # The rest of the day's cells: none, unless the rollups disagreed with the rows.
    size += delete_counts(conn, tenant_id, counted_to, end, batch)
    clear_leftover_cells(conn, tenant_id, start, end)
    return Deleted(rows, size, complete=True)


def delete_counts(
    conn: psycopg.Connection,
    tenant_id: uuid.UUID,
    lo: datetime,
    hi: datetime,
    batch: int | None = None,
) -> int:
    """Delete the tenant's log_counts minutes in [lo, hi), and its packed hours that end
    by `hi`; returns their bytes. Without `batch`, one statement each (in the caller's
    transaction, for ranges a row batch emptied); with it, statements of at most `batch`
    cells or packed hours, each committed on its own (`conn` in autocommit mode)."""
    params = {"tenant": tenant_id, "lo": lo, "lo_hour": floor_to(lo, HOUR), "hi": hi}
    minutes = _COUNTS_SQL if batch is None else _COUNTS_BATCH_SQL
    return _delete_all(conn, minutes, params, batch) + _delete_all(conn, _PACKED_SQL, params, batch)


def _delete_all(
    conn: psycopg.Connection, statement: str, params: dict[str, object], batch: int | None
) -> int:
    """`statement` run until it deletes fewer than `batch` (once without: LIMIT NULL is
    no limit); the bytes it reports."""
    size = 0
    while True:
        row = conn.execute(statement, {**params, "batch": batch}, prepare=False).fetchone()
        assert row is not None
        size += int(row[1])
        if batch is None or int(row[0]) < batch:
            return size


def clear_leftover_cells(
    conn: psycopg.Connection, tenant_id: uuid.UUID, lo: datetime, hi: datetime
) -> int:
    """Remove the coarser rollup cells of [lo, hi) (whole days) once log_counts holds
    none of its minutes; returns how many there were (0 when the trigger kept up)."""
    params = {"tenant": tenant_id, "lo": lo, "hi": hi}
    cleared = 0
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock_shared(rollup_lock_key())")
        for statement in _LEFTOVER_CELLS_SQL:
            cleared += conn.execute(statement, params, prepare=False).rowcount
    if cleared:
        log.warning(
            "rollup cells left without their minutes were removed",
            extra={
                "fields": {"tenant_id": str(tenant_id), "from": lo.isoformat(), "cells": cleared}
            },
        )
    return cleared
