"""One batch, one transaction: claim the messages in the inbox, COPY their rows, add
their counts to the per-minute rollups. Either all of it commits or none of it does.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec
import psycopg
from psycopg import AsyncConnection

from services.writer import failpoint
from services.writer.consumer import Delivery
from shared.model import LogRecord
from shared.tail import TailBatch, record_tail_batches

log = logging.getLogger("writer.store")

COPY_SQL = (
    'COPY log_entries (id, tenant_id, "timestamp", level, service_name, message, trace_id, '
    "span_id, user_id, request_id, metadata, source, host, environment) "
    "FROM STDIN (FORMAT BINARY)"
)
COPY_TYPES = [
    "uuid", "uuid", "timestamptz", "int2", "text", "text", "text",
    "text", "text", "text", "jsonb", "text", "text", "text",
]  # fmt: skip

_CLAIM_SQL = """
INSERT INTO ingest_inbox (stream, message_id, tenant_id, rows)
SELECT * FROM unnest(%s::text[], %s::text[], %s::uuid[], %s::int[])
ON CONFLICT DO NOTHING
RETURNING stream, message_id
"""

# One statement adds the batch's cells to every rollup table: per minute (log_counts),
# and the coarser hourly, daily and per-level tables that stats and histograms read
# (sql/0005_rollups.sql, 0006). The cells arrive as one JSON array of arrays: psycopg
# dumps Python lists into array parameters element by element in Python, which cost more
# than the COPY itself, while msgspec encodes the JSON in C. Sorted input keeps
# concurrent writers taking row locks in the same order (no deadlock).
_ROLLUP_SQL = """
WITH cells AS (
    SELECT (r->>0)::uuid AS tenant_id, (r->>1)::timestamptz AS minute, r->>2 AS service_name,
           (r->>3)::int2 AS level, r->>4 AS environment, (r->>5)::bigint AS count,
           (r->>6)::bigint AS bytes
    FROM json_array_elements(%s::json) AS r
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
    FROM cells GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (tenant_id, hour, service_name, level, environment)
    DO UPDATE SET count = h.count + excluded.count, bytes = h.bytes + excluded.bytes
), days AS (
    INSERT INTO log_counts_daily AS d
        (tenant_id, day, service_name, level, environment, count, bytes)
    SELECT tenant_id, date_trunc('day', minute, 'UTC'), service_name, level, environment,
           sum(count), sum(bytes)
    FROM cells GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
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


def record_bytes(r: LogRecord) -> int:
    """Approximate stored size of an entry: its text and JSON, plus fixed-width columns."""
    size = 44 + len(r.service_name) + len(r.message) + len(r.metadata or b"")
    for text in (r.trace_id, r.span_id, r.user_id, r.request_id, r.source, r.host, r.environment):
        if text:
            size += len(text)
    return size


def partition_starts(records: Iterable[LogRecord], unit: str) -> set[datetime]:
    """The first instant of every partition (UTC day or month) the records fall in."""
    # Distinct UTC dates first: one cheap call per row, datetimes only per distinct day.
    days = {r.timestamp.astimezone(UTC).date() for r in records}
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
            await _copy_rows(conn, fresh)
            await _add_rollups(conn, fresh)
            # Last: the tail_seq row lock it takes is held until COMMIT (shared/tail.py).
            tail = await record_tail_batches(conn, [d.message for d in fresh if d.message])
            await failpoint.reached("before_commit")
    return Stored(fresh=fresh, repeated=repeated, tail=tail)


async def _copy_rows(conn: AsyncConnection, deliveries: Sequence[Delivery]) -> None:
    async with conn.cursor() as cur, cur.copy(COPY_SQL) as copy:
        copy.set_types(COPY_TYPES)
        for d in deliveries:
            assert d.message is not None
            tenant = d.message.tenant_id
            for r in d.message.records:
                await copy.write_row(
                    (
                        r.id, tenant, r.timestamp, r.level, r.service_name, r.message,
                        r.trace_id, r.span_id, r.user_id, r.request_id, r.metadata,
                        r.source, r.host, r.environment,
                    )
                )  # fmt: skip


async def _add_rollups(conn: AsyncConnection, deliveries: Sequence[Delivery]) -> None:
    counts: dict[tuple[object, datetime, str, int, str], list[int]] = defaultdict(lambda: [0, 0])
    for d in deliveries:
        assert d.message is not None
        tenant = d.message.tenant_id
        for r in d.message.records:
            minute = r.timestamp.replace(second=0, microsecond=0)
            cell = counts[(tenant, minute, r.service_name, r.level, r.environment or "")]
            cell[0] += 1
            cell[1] += record_bytes(r)
    await conn.execute(_ROLLUP_SQL, rollup_parameters(counts))


def rollup_parameters(
    counts: Mapping[tuple[object, datetime, str, int, str], list[int]],
) -> tuple[str]:
    """The parameter of the rollup upsert: cells (tenant, minute, service, level,
    environment) -> [count, bytes], as one JSON array."""
    return (msgspec.json.encode([(*key, *cell) for key, cell in counts.items()]).decode(),)


def is_data_error(exc: BaseException) -> bool:
    """True when the batch's content is at fault (retrying it unchanged will fail again):
    a value PostgreSQL refuses (class 22) or a constraint it violates (class 23).

    Everything else is the environment's fault, not the message's: lost connections, and
    also schema trouble (ProgrammingError: a missing table or column), which must pause the
    writer rather than send every message to the dead-letter stream.
    """
    return isinstance(exc, psycopg.DataError | psycopg.IntegrityError)
