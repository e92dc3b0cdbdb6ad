"""log_entries' partitions as retention sees them: their ranges, what each holds per
tenant and day, and removing one without blocking writers or readers.

A partition is removed with `DETACH PARTITION … CONCURRENTLY` (its first transaction
takes only SHARE UPDATE EXCLUSIVE on log_entries, so COPY and queries carry on; the
second waits for the transactions that may still see the partition), then DROP TABLE on
the table, which nothing reads any more. There is no DEFAULT partition, which would
forbid the concurrent form (ARCHITECTURE.md, pitfall 5). A detach interrupted between
its two transactions leaves the partition "pending detach": `DETACH … FINALIZE`
completes it. A crash between detach and drop leaves a plain table named like a
partition: `leftovers` finds it.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg import sql

# The bounds as written in the catalog (not parsed from the name): an attached
# partition's range is whatever it was created with.
_PARTITIONS_SQL = """
SELECT c.relname, b[1]::timestamptz, b[2]::timestamptz, i.inhdetachpending
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
CROSS JOIN LATERAL regexp_match(
    pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']+)''\\) TO \\(''([^'']+)''\\)') AS b
WHERE i.inhparent = 'log_entries'::regclass
ORDER BY 2
"""

# Tables named the way ensure_log_partition (sql/0001_core.sql) names partitions that are
# no partition any more: only retention detaches partitions, so these are its own.
_LEFTOVERS_SQL = """
SELECT c.relname
FROM pg_class c
WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'
  AND NOT c.relispartition AND c.relname ~ '^log_entries_p[0-9]{6}([0-9]{2})?$'
ORDER BY 1
"""
_NAME = re.compile(r"^log_entries_p(\d{4})(\d{2})(\d{2})?$")

# The second transaction of a concurrent detach waits for every transaction that holds
# a lock on log_entries. A session left idle in a transaction would hold it forever: past
# this the statement is cancelled, the partition stays "pending detach" (queries no
# longer see it) and the next run finalizes it.
DETACH_TIMEOUT = "10min"


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    start: datetime
    end: datetime
    detach_pending: bool = False


def list_partitions(conn: psycopg.Connection) -> list[Partition]:
    """The attached partitions (and those pending detach), oldest first."""
    return [Partition(*row) for row in conn.execute(_PARTITIONS_SQL).fetchall()]


def partition_holding(conn: psycopg.Connection, instant: datetime) -> str | None:
    """The partition whose range holds `instant`, if any (pending detach or not)."""
    for partition in list_partitions(conn):
        if partition.start <= instant < partition.end:
            return partition.name
    return None


def range_of_name(name: str) -> tuple[datetime, datetime] | None:
    """The range a partition of this name covered: a day (…pYYYYMMDD) or a month
    (…pYYYYMM). For detached leftovers, whose bounds the catalog no longer has."""
    match = _NAME.match(name)
    if match is None:
        return None
    year, month, day = int(match[1]), int(match[2]), match[3]
    if day is not None:
        start = datetime(year, month, int(day), tzinfo=UTC)
        return start, start + timedelta(days=1)
    start = datetime(year, month, 1, tzinfo=UTC)
    return start, datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)


def leftovers(conn: psycopg.Connection) -> list[Partition]:
    """Partitions detached by an earlier run that crashed before dropping them."""
    found = []
    for (name,) in conn.execute(_LEFTOVERS_SQL).fetchall():
        bounds = range_of_name(name)
        if bounds is not None:
            found.append(Partition(name, *bounds))
    return found


@dataclass(frozen=True, slots=True)
class TenantDay:
    tenant_id: uuid.UUID
    day: date
    rows: int


def rows_per_tenant_day(conn: psycopg.Connection, partition: Partition) -> list[TenantDay]:
    """What the partition holds, counted from its rows (not from the rollups: a tenant
    whose policy archives must be archived from whatever is there)."""
    statement = sql.SQL(
        "SELECT tenant_id, (\"timestamp\" AT TIME ZONE 'UTC')::date, count(*) "
        "FROM {} GROUP BY 1, 2 ORDER BY 2, 1"
    ).format(sql.Identifier(partition.name))
    return [TenantDay(t, d, int(n)) for t, d, n in conn.execute(statement).fetchall()]


def detach_and_drop(conn: psycopg.Connection, partition: Partition) -> None:
    """Detach `partition` concurrently (or finalize its interrupted detach) and drop it.
    `conn` must be in autocommit mode: DETACH … CONCURRENTLY cannot run in a transaction
    block."""
    name = sql.Identifier(partition.name)
    conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(DETACH_TIMEOUT)))
    try:
        # A failure (the timeout) leaves the partition pending: the next run finalizes it.
        mode = "FINALIZE" if partition.detach_pending else "CONCURRENTLY"
        conn.execute(
            sql.SQL("ALTER TABLE log_entries DETACH PARTITION {} {}").format(name, sql.SQL(mode))
        )
    finally:
        conn.execute("RESET statement_timeout")
    drop_table(conn, partition.name)


def drop_table(conn: psycopg.Connection, name: str) -> None:
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
