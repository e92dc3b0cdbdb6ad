"""Closed days' minute cells packed per hour (services/janitor/count_packing.py): every
count answers as before, from the packed minutes; a late entry and a removal keep them
exact, and the coarser rollups never change by a move."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from services.janitor.count_packing import pack_closed_minutes, pack_tenant_minutes
from services.janitor.policies import tenants_with_logs
from services.janitor.removal import delete_tenant_day
from services.writer.store import _ROLLUP_SQL
from shared import rollups
from shared.compaction import compact
from shared.db import tenant_scope
from shared.filters import LogFilter, compile_filter
from tests.conftest import OTHER_TENANT, TENANT, tenant_headers
from tests.polling import wait_until
from tests.test_kept_hours import FRESH, stats
from tests.test_loki_query import loki, ns
from tests.test_stats import (
    Dataset,
    check_stats,
    ingest_dataset,
    iso,
    post_aggregate,
    query_dict,
    rollups_disagree,
    windows,
)

MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)


def packed(conninfo: str) -> int:
    """The janitor's packing, the rollups compacted first (days close at the watermark)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        compact(conn)
        return pack_closed_minutes(conn)


def filters(data: Dataset) -> list[LogFilter]:
    """Windows ending off the hour and the minute (minute cells at both ends), whole and
    narrowed to what only the minutes of log_counts can count."""
    found = []
    for start, end in windows(data):
        for terms in ({}, {"service_name": "payment"}, {"environment": "production"},
                      {"service_name": "api", "min_level": "WARN"}):  # fmt: skip
            found.append(LogFilter(start_time=iso(start), end_time=iso(end), **terms))
    return found


async def answers(client, data: Dataset) -> list[Any]:
    """Every count the API gives of the dataset: stats of both tenants, 1-minute and
    1-hour histograms by service, the services list."""
    got: list[Any] = []
    for f in filters(data):
        for tenant in (TENANT, OTHER_TENANT):
            body = await stats(client, f, tenant)
            check_stats(body, data.expected(tenant, f))
            got.append(body)
        for interval in ("1m", "1h"):
            response = await post_aggregate(
                client, {**query_dict(f), "interval": interval, "group_by": "service"}
            )
            assert response.status_code == 200, response.text
            got.append(response.json()["buckets"])
    response = await client.get("/api/v1/logs/services", headers={**tenant_headers(), **FRESH})
    assert response.status_code == 200, response.text
    got.append(response.json()["services"])  # its window ends now
    # Grafana's: bytes per service, and a service's entries per minute (Loki's API).
    start, end = windows(data)[1]
    window = {"start": ns(start), "end": ns(end)}
    got.append(await loki(client, "/index/volume", query='{service_name=~".+"}', **window))
    service = data.entries[TENANT][0]["service_name"]
    logql = f'sum by (level) (count_over_time({{service_name="{service}"}} [1m]))'
    got.append(await loki(client, "/query_range", query=logql, step="60000ms", **window))
    return got


def cells(db: psycopg.Connection, table: str) -> int:
    row = db.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


async def test_packed_minutes_answer_every_count_as_before(client, writer, settings, db) -> None:
    data = await ingest_dataset(client, writer, per_tenant=600)
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        compact(conn)
    before = await answers(client, data)
    minutes = cells(db, "log_counts")
    coarser = db.execute("SELECT * FROM log_counts_hourly ORDER BY 1, 2, 3, 4, 5").fetchall()

    assert packed(settings.postgres_conninfo()) == minutes
    assert cells(db, "log_counts") == 0
    assert db.execute(
        "SELECT sum(cardinality(minutes)), count(DISTINCT tenant_id) FROM log_counts_packed"
    ).fetchone() == (minutes, 2)
    assert await answers(client, data) == before
    assert db.execute("SELECT * FROM log_counts_hourly ORDER BY 1, 2, 3, 4, 5").fetchall() == (
        coarser
    )
    assert rollups_disagree(db) == []
    # Retention still finds both tenants, though log_counts holds none of their cells.
    with psycopg.connect(settings.postgres_conninfo()) as conn:
        assert set(tenants_with_logs(conn)) == {TENANT, OTHER_TENANT}
    assert packed(settings.postgres_conninfo()) == 0  # nothing left to pack


async def test_a_late_entry_of_a_packed_day_is_counted_and_packed_on_its_own(
    client, writer, settings, db
) -> None:
    data = await ingest_dataset(client, writer, per_tenant=300)
    packed(settings.postgres_conninfo())
    # Into a minute already packed, with the service, level and environment of an entry
    # there: the same key gets a log_counts cell again.
    first = min(data.entries[TENANT], key=lambda e: e["timestamp"])
    late = {
        "service_name": first["service_name"],
        "level": "INFO",
        "environment": first.get("environment") or "production",
        "message": "late",
        "timestamp": iso(first["timestamp"].replace(second=59)),
    }
    response = await client.post(
        "/api/v1/logs/batch", json={"entries": [late]}, headers=tenant_headers()
    )
    assert response.status_code == 202, response.text
    await writer.drain()
    data.entries[TENANT].append({**late, "level": 2, "timestamp": datetime.fromisoformat(
        late["timestamp"])})  # fmt: skip
    assert cells(db, "log_counts") == 1
    counted = await answers(client, data)  # each checked against the entries
    assert packed(settings.postgres_conninfo()) == 1
    assert cells(db, "log_counts") == 0
    assert await answers(client, data) == counted
    assert rollups_disagree(db) == []


async def test_removing_a_packed_tenant_day_takes_its_counts_out(
    client, writer, settings, db
) -> None:
    data = await ingest_dataset(client, writer, per_tenant=300)
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        compact(conn)
    sizes = dict(db.execute("SELECT tenant_id, sum(bytes) FROM log_counts GROUP BY 1").fetchall())
    packed(settings.postgres_conninfo())
    removed = 0
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        for day in sorted({e["timestamp"].date() for e in data.entries[TENANT]}):
            # Small batches: hours emptied by one batch while the next is still counted.
            deleted = delete_tenant_day(conn, TENANT, day, batch=37)
            assert deleted.complete
            removed += deleted.bytes
    assert removed == sizes[TENANT]
    everything = windows(data)[0]
    f = LogFilter(start_time=iso(everything[0]), end_time=iso(everything[1]))
    check_stats(await stats(client, f, TENANT), [])
    check_stats(await stats(client, f, OTHER_TENANT), data.expected(OTHER_TENANT, f))
    assert db.execute(
        "SELECT count(*) FROM log_counts_packed WHERE tenant_id = %s", (TENANT,)
    ).fetchone() == (0,)
    for table in ("log_counts_hourly", "log_counts_daily", "log_counts_by_level"):
        assert db.execute(
            f"SELECT count(*) FROM {table} WHERE tenant_id = %s", (TENANT,)
        ).fetchone() == (0,)
    assert rollups_disagree(db) == []


def test_only_closed_days_are_packed(settings, db) -> None:
    """Cells of today, and of a day whose minutes are not compacted, stay in log_counts
    (the writer's upserts keep updating them)."""
    now = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    yesterday = now - timedelta(days=1)
    tenant = uuid.uuid4()
    for minute in (yesterday, now - MINUTE):
        db.execute(
            "INSERT INTO log_counts (tenant_id, minute, service_name, level, count, bytes) "
            "VALUES (%s, %s, 'api', 2, 1, 10)",
            (tenant, minute),
        )
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        conn.execute("UPDATE rollup_watermark SET compacted_until = %s", (yesterday,))
        assert pack_closed_minutes(conn, now=now) == 0  # yesterday's minutes not compacted
        conn.execute("UPDATE rollup_watermark SET compacted_until = %s", (now,))
        assert pack_closed_minutes(conn, now=now) == 1
    assert db.execute(
        "SELECT minute FROM log_counts WHERE tenant_id = %s", (tenant,)
    ).fetchall() == [(now - MINUTE,)]


@pytest.mark.parametrize("first", ["writer", "move"])
async def test_a_cell_written_while_its_day_is_moved_is_counted_once(settings, db, first) -> None:
    """The writer's upsert of a cell (its statement, late path) and the move of the cell's
    day, each waiting for the other's transaction: either way every entry counts once."""
    now = datetime.now(UTC)
    minute = now.replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=2)
    tenant = uuid.uuid4()
    cell = json.dumps([[str(tenant), int(minute.timestamp()), "api", 2, "", 1, 10]])
    db.execute("UPDATE rollup_watermark SET compacted_until = %s", (now - MINUTE,))
    db.execute(_ROLLUP_SQL, (cell,))  # an entry stored before
    day = minute.replace(hour=0)

    def waiting() -> bool:
        row = db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"
        ).fetchone()
        return row is not None and row[0] == 1

    with (
        psycopg.connect(settings.postgres_conninfo()) as holder,
        psycopg.connect(settings.postgres_conninfo(), autocommit=True) as other,
    ):
        if first == "writer":
            holder.execute(_ROLLUP_SQL, (cell,))
            blocked = asyncio.to_thread(pack_tenant_minutes, other, tenant, day, day + DAY)
        else:
            holder.execute("SET LOCAL minisource.moving_minutes = 'on'")
            pack_tenant_minutes(holder, tenant, day, day + DAY)  # a savepoint: still open
            blocked = asyncio.to_thread(other.execute, _ROLLUP_SQL, (cell,))
        waited = asyncio.ensure_future(blocked)
        await wait_until(waiting, within=30, what=f"the other waiting for the {first}")
        holder.commit()
        await waited
    total = db.execute(
        "SELECT sum(count) FROM log_count_minutes WHERE tenant_id = %s", (tenant,)
    ).fetchone()
    assert total == (2,)
    assert db.execute(
        "SELECT count FROM log_counts_hourly WHERE tenant_id = %s", (tenant,)
    ).fetchone() == (2,)
    assert rollups_disagree(db) == []
    # Whoever came second: the move packed both, or the writer's cell waits for the next.
    assert pack_closed_minutes(db, now=now) == (1 if first == "move" else 0)
    assert db.execute(
        "SELECT sum(c) FROM log_counts_packed, unnest(counts) AS c WHERE tenant_id = %s",
        (tenant,),
    ).fetchone() == (2,)


async def test_a_minute_span_finds_packed_hours_by_their_index(
    client, writer, settings, pool
) -> None:
    """The bound on the time a cell is stored under reaches log_counts_packed's index
    (tenant, hour, …): a count of a few minutes reads those hours' rows, not the
    tenant's every packed row. Sequential scans are turned off, so that the plan shows
    whether the index can be searched by hour at all (on these few rows a scan wins)."""
    data = await ingest_dataset(client, writer, per_tenant=300)
    packed(settings.postgres_conninfo())
    lo = data.start.replace(second=0, microsecond=0) + 5 * MINUTE
    f = compile_filter(LogFilter(start_time=iso(lo), end_time=iso(lo + 7 * MINUTE),
                                 service_name="api"))  # fmt: skip
    span = rollups.Span(rollups.Source.MINUTE, lo, lo + 7 * MINUTE)
    statement = rollups.spans_statement(TENANT, f, [span], ("level",), None)
    async with tenant_scope(pool, TENANT) as conn:
        await conn.execute("SET LOCAL enable_seqscan = off")
        cur = await conn.execute(
            b"EXPLAIN " + statement.query.as_bytes(conn), statement.params, prepare=False
        )
        plan = "\n".join(row[0] for row in await cur.fetchall())
    packed_scan = plan[plan.index("log_counts_packed_tenant_hour") :]
    assert re.search(r"Index Cond: .*hour >= .*hour < ", packed_scan), plan
