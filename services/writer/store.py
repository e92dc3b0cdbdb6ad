"""One batch, one transaction: claim the messages in the inbox, COPY their rows, add
their counts to the per-minute rollups. Either all of it commits or none of it does.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg import AsyncConnection

from services.writer.consumer import Delivery
from shared.model import LogRecord

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

# Sorted input keeps concurrent writers taking row locks in the same order (no deadlock).
_ROLLUP_SQL = """
INSERT INTO log_counts AS c (tenant_id, minute, service_name, level, environment, count, bytes)
SELECT * FROM unnest(%s::uuid[], %s::timestamptz[], %s::text[], %s::int2[], %s::text[],
                     %s::bigint[], %s::bigint[])
ORDER BY 1, 2, 3, 4, 5
ON CONFLICT (tenant_id, minute, service_name, level, environment)
DO UPDATE SET count = c.count + excluded.count, bytes = c.bytes + excluded.bytes
"""


@dataclass(slots=True)
class Stored:
    """What one committed batch contained: the fresh deliveries and the skipped repeats."""

    fresh: list[Delivery]
    repeated: list[Delivery]

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
    starts = set()
    for r in records:
        ts = r.timestamp
        start = ts.replace(hour=0, minute=0, second=0, microsecond=0)
        if unit == "month":
            start = start.replace(day=1)
        starts.add(start)
    return starts


async def ensure_partitions(conn: AsyncConnection, starts: Iterable[datetime]) -> None:
    for start in sorted(starts):
        # Midday of the day avoids any doubt about which range a boundary falls in.
        await conn.execute("SELECT ensure_log_partition(%s)", (start + timedelta(hours=12),))


async def store_batch(conn: AsyncConnection, deliveries: Sequence[Delivery]) -> Stored:
    """Store `deliveries` in one transaction; returns which were new and which repeats."""
    unique = list({(d.stream, d.message_id): d for d in deliveries}.values())
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
    return Stored(fresh=fresh, repeated=repeated)


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
    keys = sorted(counts, key=lambda k: (str(k[0]), k[1], k[2], k[3], k[4]))
    await conn.execute(
        _ROLLUP_SQL,
        (
            [k[0] for k in keys],
            [k[1] for k in keys],
            [k[2] for k in keys],
            [k[3] for k in keys],
            [k[4] for k in keys],
            [counts[k][0] for k in keys],
            [counts[k][1] for k in keys],
        ),
    )


def is_data_error(exc: BaseException) -> bool:
    """True when the batch's content is at fault (retrying it unchanged will fail again);
    False for lost connections and other transient trouble."""
    return isinstance(exc, psycopg.DataError | psycopg.IntegrityError | psycopg.ProgrammingError)
