"""One batch, one transaction: claim the messages in the inbox, COPY their rows, add
their counts to the per-minute rollups. Either all of it commits or none of it does.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec
import psycopg
from psycopg import AsyncConnection, postgres, sql
from psycopg.adapt import Dumper
from psycopg.pq import Format

from services.writer import failpoint
from services.writer.consumer import Delivery
from services.writer.metrics import COMMIT_DURATION
from services.writer.tail import TailBatch, UuidArray, UuidArrayDumper, record_tail_batches
from services.writer.tracing import copy_span
from shared.model import ENTRY_FIELDS, ENTRY_FIXED_BYTES, StoredRow, entry_size

log = logging.getLogger("writer.store")
_json = msgspec.json.Encoder()

# Columns in the order of a StoredRow (shared/model.py), then the message's tenant: a
# decoded row plus the tenant is the COPY row as it is. Binary COPY carries no types, only
# each value in its type's binary form; the 16 bytes of a UUID are exactly what psycopg's
# C `bytea` dumper sends, so ids and tenants go through it instead of the Python `uuid`
# dumper (README, "Benchmarks").
COPY_COLUMNS = (*ENTRY_FIELDS, "tenant_id")
COPY_SQL = sql.SQL("COPY log_entries ({}) FROM STDIN (FORMAT BINARY)").format(
    sql.SQL(", ").join(map(sql.Identifier, COPY_COLUMNS))
)
# The binary form of each column; every other stored field is text.
_COPY_TYPE = {
    "id": "bytea", "tenant_id": "bytea", "timestamp": "timestamptz", "level": "int2",
    "metadata": "jsonb",
}  # fmt: skip
COPY_TYPES = [_COPY_TYPE.get(name, "text") for name in COPY_COLUMNS]


class _JsonbTextDumper(Dumper):
    """jsonb in binary COPY: metadata arrives as JSON text the gateway encoded, and jsonb's
    binary form is that text after a version byte. Used where a jsonb column is named in
    `set_types` (COPY_TYPES): no JSON encoder is called per row."""

    format = Format.BINARY
    oid = postgres.types["jsonb"].oid

    def dump(self, obj: bytes) -> bytes:
        return b"\x01" + obj


def register_dumpers(conn: AsyncConnection) -> None:
    """Register on `conn` every dumper the store's statements need. Per connection, not
    in psycopg's global adapters: importing the writer must not change how other code in
    the process (tests, benchmarks) dumps values."""
    # None: only for lookups by type (COPY's set_types), never for query parameters.
    conn.adapters.register_dumper(None, _JsonbTextDumper)
    conn.adapters.register_dumper(UuidArray, UuidArrayDumper)


_CLAIM_SQL = """
INSERT INTO ingest_inbox (stream, message_id, tenant_id, rows)
SELECT * FROM unnest(%s::text[], %s::text[], %s::uuid[], %s::int[])
ON CONFLICT DO NOTHING
RETURNING stream, message_id
"""

# Taken just before the rollup statement and held until COMMIT (sql/0007_rollup_compaction
# .sql): compaction cannot move the watermark while this transaction may still add cells,
# and the rollup statement, a later statement, reads the watermark as compaction left it.
_ROLLUP_LOCK_SQL = "SELECT pg_advisory_xact_lock_shared(rollup_lock_key())"

# One statement adds the batch's cells to the rollup tables: per minute (log_counts) and
# per minute and level (log_counts_by_level), every cell; hourly and daily, only cells of
# minutes already compacted (entries that came late): the janitor adds the others
# (sql/0007_rollup_compaction.sql). The cells arrive as one JSON array of arrays: psycopg
# dumps Python lists into array parameters element by element in Python, which cost more
# than the COPY itself, while msgspec encodes the JSON in C. Sorted input keeps
# concurrent writers taking row locks in the same order (no deadlock).
_ROLLUP_SQL = """
WITH cells AS (
    SELECT (r->>0)::uuid AS tenant_id, to_timestamp((r->>1)::bigint) AS minute,
           r->>2 AS service_name, (r->>3)::int2 AS level, r->>4 AS environment,
           (r->>5)::bigint AS count, (r->>6)::bigint AS bytes
    FROM json_array_elements(%s::json) AS r
), late AS (
    SELECT * FROM cells WHERE minute < (SELECT compacted_until FROM rollup_watermark)
), minutes AS (
    INSERT INTO log_counts AS c
        (tenant_id, minute, service_name, level, environment, count, bytes)
    SELECT * FROM cells ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (tenant_id, minute, service_name, level, environment)
    DO UPDATE SET count = c.count + excluded.count, bytes = c.bytes + excluded.bytes
), hours AS (
    INSERT INTO log_counts_hourly AS h
        (tenant_id, hour, service_name, level, environment, count, bytes)
    SELECT tenant_id, date_trunc('hour', minute, 'UTC'), service_name, level, environment,
           sum(count), sum(bytes)
    FROM late GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (tenant_id, hour, service_name, level, environment)
    DO UPDATE SET count = h.count + excluded.count, bytes = h.bytes + excluded.bytes
), days AS (
    INSERT INTO log_counts_daily AS d
        (tenant_id, day, service_name, level, environment, count, bytes)
    SELECT tenant_id, date_trunc('day', minute, 'UTC'), service_name, level, environment,
           sum(count), sum(bytes)
    FROM late GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (tenant_id, day, service_name, level, environment)
    DO UPDATE SET count = d.count + excluded.count, bytes = d.bytes + excluded.bytes
)
INSERT INTO log_counts_by_level AS l (tenant_id, minute, level, count, bytes)
SELECT tenant_id, minute, level, sum(count), sum(bytes)
FROM cells GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
ON CONFLICT (tenant_id, minute, level)
DO UPDATE SET count = l.count + excluded.count, bytes = l.bytes + excluded.bytes
"""


@dataclass(slots=True)
class Stored:
    """What one committed batch contained: the fresh deliveries and the skipped repeats."""

    fresh: list[Delivery]
    repeated: list[Delivery]
    # Live tail: each tenant's number for this commit and its rows, published after ACK.
    tail: list[TailBatch] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(d.rows for d in self.fresh)


def partition_starts(rows: Iterable[StoredRow], unit: str) -> set[datetime]:
    """The first instant of every partition (UTC day or month) the rows fall in."""
    # Distinct UTC dates first: one cheap call per row, datetimes only per distinct day.
    # Rows carry UTC timestamps (the gateway normalises them): no conversion needed.
    days = {r[1].date() if r[1].tzinfo is UTC else r[1].astimezone(UTC).date() for r in rows}
    return {datetime(d.year, d.month, 1 if unit == "month" else d.day, tzinfo=UTC) for d in days}


async def ensure_partitions(conn: AsyncConnection, starts: Iterable[datetime]) -> None:
    for start in sorted(starts):
        # Midday of the day avoids any doubt about which range a boundary falls in.
        await conn.execute("SELECT ensure_log_partition(%s)", (start + timedelta(hours=12),))


async def store_batch(conn: AsyncConnection, deliveries: Sequence[Delivery]) -> Stored:
    """Store `deliveries` in one transaction; returns which were new and which repeats."""
    # Sorted: writers that got the same message (one claimed it from the other) then take
    # the inbox row locks in the same order and wait for each other instead of deadlocking.
    unique = sorted(
        {(d.stream, d.message_id): d for d in deliveries}.values(),
        key=lambda d: (d.stream, d.message_id),
    )
    tail: list[TailBatch] = []
    async with conn.transaction():
        claimed = await conn.execute(
            _CLAIM_SQL,
            (
                [d.stream for d in unique],
                [d.message_id for d in unique],
                [d.message.tenant_id if d.message else None for d in unique],
                [d.rows for d in unique],
            ),
        )
        new_keys = {(row[0], row[1]) for row in await claimed.fetchall()}
        fresh = [d for d in unique if (d.stream, d.message_id) in new_keys]
        repeated = [d for d in unique if (d.stream, d.message_id) not in new_keys]
        if fresh:
            with copy_span(fresh):
                await _copy_rows(conn, fresh)
            await conn.execute(_ROLLUP_LOCK_SQL)
            await _add_rollups(conn, fresh)
            # Last: the tail_seq row lock it takes is held until COMMIT
            # (services/writer/tail.py).
            tail = await record_tail_batches(conn, [d.message for d in fresh if d.message])
            await failpoint.reached("before_commit")
        committing = time.perf_counter()
    # Leaving the block commits: what is timed from here is the COMMIT (the WAL flush).
    COMMIT_DURATION.observe(time.perf_counter() - committing)
    return Stored(fresh=fresh, repeated=repeated, tail=tail)


def _by_tenant(d: Delivery) -> bytes:
    assert d.message is not None
    return d.message.tenant_id.bytes


async def _copy_rows(conn: AsyncConnection, deliveries: Sequence[Delivery]) -> None:
    """COPY the deliveries' rows, each tenant's together: a batch holds requests from many
    tenants in arrival order, and the open day is scanned per tenant (a search, a count)
    until the janitor rewrites it in tenant order. Grouped, a tenant's small requests
    share pages: with 10-entry requests, a tenant with 4 % of a day's rows had them on
    2.1x fewer pages (README, "Search"). The sort is stable: each request keeps its
    order."""
    async with conn.cursor() as cur, cur.copy(COPY_SQL) as copy:
        copy.set_types(COPY_TYPES)
        for d in sorted(deliveries, key=_by_tenant):
            assert d.message is not None
            tenant = (d.message.tenant_id.bytes,)
            for row in d.message.records:
                await copy.write_row(row + tenant)


async def _add_rollups(conn: AsyncConnection, deliveries: Sequence[Delivery]) -> None:
    cells = RollupCells()
    for d in deliveries:
        assert d.message is not None
        cells.add(d.message.tenant_id, d.message.records)
    await conn.execute(_ROLLUP_SQL, cells.parameters())


class RollupCells:
    """Counts and bytes per (tenant, minute, service, level, environment) cell.

    Runs once per stored row, so it is written for speed: the minute is kept as Unix
    minutes (an int, not a datetime: `replace()` cost more than the rest of the loop).
    """

    def __init__(self) -> None:
        self._cells: dict[tuple[uuid.UUID, int, str, int, str], list[int]] = {}

    def add(self, tenant: uuid.UUID, rows: Iterable[StoredRow]) -> None:
        cells = self._cells
        fixed = ENTRY_FIXED_BYTES
        for r in rows:
            timestamp, level, service, environment = r[1], r[2], r[3], r[12]
            key = (tenant, int(timestamp.timestamp()) // 60, service, level, environment or "")
            size = fixed + entry_size(r)
            cell = cells.get(key)
            if cell is None:
                cells[key] = [1, size]
            else:
                cell[0] += 1
                cell[1] += size

    def parameters(self) -> tuple[str]:
        """The parameter of the rollup upsert: every cell as [tenant, minute (Unix
        seconds), service, level, environment, count, bytes], in one JSON array."""
        return (
            _json.encode(
                [
                    (tenant, minute * 60, service, level, env, *cell)
                    for (tenant, minute, service, level, env), cell in self._cells.items()
                ]
            ).decode(),
        )


def is_data_error(exc: BaseException) -> bool:
    """True when the batch's content is at fault (retrying it unchanged will fail again):
    a value PostgreSQL refuses (class 22) or a constraint it violates (class 23).

    Everything else is the environment's fault, not the message's: lost connections, and
    also schema trouble (ProgrammingError: a missing table or column), which must pause the
    writer rather than send every message to the dead-letter stream.
    """
    return isinstance(exc, psycopg.DataError | psycopg.IntegrityError)
