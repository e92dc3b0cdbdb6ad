"""Where the writer's COPY puts a batch's rows (services/writer/store.py): each tenant's
rows of a batch together, each request in the order it was sent."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta

import psycopg

from services.writer.consumer import Delivery
from services.writer.store import ensure_partitions, partition_starts, register_dumpers, store_batch
from shared.model import StoredMessage, StoredRow
from shared.settings import Settings

START = datetime(2025, 3, 15, 10, 0, tzinfo=UTC)
TENANT_A = uuid.UUID("00000000-0000-4000-8000-00000000000a")
TENANT_B = uuid.UUID("00000000-0000-4000-8000-00000000000b")


def request(tenant: uuid.UUID, first: int, rows: int) -> StoredMessage:
    """One ingest request: `rows` entries a second apart, message numbered from `first`."""
    unset = (None,) * 8  # trace, span, user, request, metadata, source, host, environment
    records: list[StoredRow] = [
        (uuid.uuid4().bytes, START + timedelta(seconds=i), 2, "api", f"entry {i}", *unset)
        for i in range(first, first + rows)
    ]
    return StoredMessage(tenant, START, records)


async def test_a_batch_is_stored_with_each_tenants_rows_together(
    settings: Settings, db: psycopg.Connection
) -> None:
    # Requests as they arrive from two tenants, interleaved.
    arrivals = [
        request(TENANT_A, 0, 30),
        request(TENANT_B, 0, 30),
        request(TENANT_A, 30, 30),
        request(TENANT_B, 30, 30),
        request(TENANT_A, 60, 30),
    ]
    deliveries = [Delivery("test", f"1-{n}", b"", m) for n, m in enumerate(arrivals)]
    async with await psycopg.AsyncConnection.connect(
        settings.postgres_conninfo(), autocommit=True
    ) as conn:
        register_dumpers(conn)
        rows = (r for m in arrivals for r in m.records)
        await ensure_partitions(conn, partition_starts(rows, settings.partition_interval))
        stored = await store_batch(conn, deliveries)
    assert stored.rows == 150

    # Physical order (the open day's, until the janitor rewrites it): one run per tenant.
    layout = db.execute(
        f"SELECT tenant_id, message FROM log_entries_p{START:%Y%m%d} ORDER BY ctid"
    ).fetchall()
    runs = [tenant for tenant, _ in itertools.groupby(row[0] for row in layout)]
    assert sorted(runs) == [TENANT_A, TENANT_B]
    # Within a tenant, its requests in arrival order and each request's own order.
    for tenant, count in ((TENANT_A, 90), (TENANT_B, 60)):
        messages = [message for t, message in layout if t == tenant]
        assert messages == [f"entry {i}" for i in range(count)]
