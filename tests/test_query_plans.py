"""The main query shapes use an index and read only the partitions of their window.

Realistic rows (10 tenants, 3 days) are loaded and ANALYZEd, the trigram index is built
on the closed days as the janitor does, and each statement shared/logstore.py sends is
EXPLAINed inside `tenant_scope` (role log_reader, as the gateway runs it).
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from services.gateway.ingest.ids import uuid7
from services.gateway.query import pages
from services.gateway.query.store import (
    Statement,
    count_statement,
    count_up_to,
    entries_statement,
    entry_statement,
    estimate_count,
)
from services.janitor.closed_partitions import settle_closed_partition
from shared import rollups
from shared.db import make_pool, tenant_scope
from shared.filters import LogFilter, compile_filter
from shared.model import Level
from shared.settings import Settings
from tests.conftest import clone_database, drop_database
from tests.datagen import load_gen_logs

NOW = datetime.now(UTC).replace(microsecond=0)
ROWS = 40_000
DAYS = 3
# A partition with fewer rows is a few pages: read whole, it costs what an index would.
MANY_ROWS = 2_000


@dataclass(frozen=True)
class Loaded:
    tenant: uuid.UUID
    sample: tuple[uuid.UUID, str, str, str]
    pool: AsyncConnectionPool
    filled: frozenset[str]


def load(db: psycopg.Connection) -> uuid.UUID:
    """Realistic rows by COPY (as the writer does); returns the busiest tenant."""
    for day in range(DAYS + 1):
        db.execute("SELECT ensure_log_partition(%s)", (NOW - timedelta(days=day),))
    tenants: Counter[str] = Counter()
    columns = (
        'id, tenant_id, "timestamp", level, service_name, message, trace_id, span_id, user_id, '
        "request_id, metadata, source, host, environment"
    )
    with db.cursor() as cur, cur.copy(f"COPY log_entries ({columns}) FROM STDIN") as copy:
        for e in load_gen_logs().generate(ROWS, seed=11, days=DAYS, tenants=10, end=NOW):
            ts = datetime.fromisoformat(e["timestamp"])
            tenants[e["tenant_id"]] += 1
            copy.write_row(
                (
                    uuid7(int(ts.timestamp() * 1e9)), e["tenant_id"], ts,
                    int(Level[e["level"]]), e["service_name"], e["message"], e["trace_id"],
                    e["span_id"], e["user_id"], e["request_id"], json.dumps(e["metadata"]),
                    e["source"], e["host"], e["environment"],
                )
            )  # fmt: skip
    db.execute("VACUUM ANALYZE log_entries")
    while settle_closed_partition(db, before=NOW):
        pass
    db.execute("ANALYZE log_entries")
    return uuid.UUID(tenants.most_common(1)[0][0])


@dataclass(frozen=True)
class Database:
    settings: Settings
    tenant: uuid.UUID
    sample: tuple[uuid.UUID, str, str, str]  # id, trace_id, request_id, user_id
    filled: frozenset[str]  # partitions holding MANY_ROWS rows or more


@pytest.fixture(scope="module")
def database(base_settings: Settings) -> Iterator[Database]:
    """One loaded database for the module: loading is the slow part, EXPLAIN is not."""
    name = f"mlog_plans_{uuid.uuid4().hex[:12]}"
    clone_database(base_settings, name)
    settings = replace(base_settings, postgres_db=name)
    try:
        with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as db:
            tenant = load(db)
            row = db.execute(
                "SELECT id, trace_id, request_id, user_id FROM log_entries WHERE tenant_id = %s "
                "ORDER BY id LIMIT 1",
                (tenant,),
            ).fetchone()
            assert row is not None
            # A partition with a few minutes of the window (its first day late in the UTC
            # day, today early in it) is a few pages, which the planner rightly reads
            # whole: partitions of at least MANY_ROWS are the ones an index must serve.
            filled = {
                str(r[0])
                for r in db.execute(
                    "SELECT tableoid::regclass FROM log_entries GROUP BY 1 HAVING count(*) >= %s",
                    (MANY_ROWS,),
                )
            }
        yield Database(settings, tenant, (row[0], row[1], row[2], row[3]), frozenset(filled))
    finally:
        drop_database(base_settings, name)


@pytest.fixture
async def loaded(database: Database) -> AsyncIterator[Loaded]:
    pool = make_pool(database.settings, name="plans", min_size=0, max_size=1)
    await pool.open()
    try:
        yield Loaded(database.tenant, database.sample, pool, database.filled)
    finally:
        await pool.close()


async def explain(loaded: Loaded, statement: Statement) -> str:
    async with tenant_scope(loaded.pool, loaded.tenant) as conn:
        cur = await conn.execute(
            b"EXPLAIN " + statement.query.as_bytes(conn), statement.params, prepare=False
        )
        return "\n".join(row[0] for row in await cur.fetchall())


def partitions(plan: str) -> set[str]:
    return set(re.findall(r"\bon (log_entries_p\d+)", plan))


def days_of(start: datetime, end: datetime | None = None) -> set[str]:
    """The daily partitions a window [start, end) touches. Without an end, the window
    is open: it reaches the (empty) partitions made ahead of today too."""
    end = end or NOW + timedelta(days=5)
    names = set()
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    while day < end:
        names.add(f"log_entries_p{day:%Y%m%d}")
        day += timedelta(days=1)
    return names


def assert_indexed(loaded: Loaded, plan: str, index: str) -> None:
    """`index` is read, and no partition holding MANY_ROWS rows or more is read whole
    (empty partitions ahead of today and a few minutes' rows cost nothing to scan and
    are left to the planner)."""
    used = rf"(Index (Only )?Scan( Backward)? using|Bitmap Index Scan on) \S*{index}"
    assert re.search(used, plan), plan
    scanned = set(re.findall(r"Seq Scan on (log_entries_p\d+)", plan))
    assert not scanned & loaded.filled, plan


def window(hours: float) -> LogFilter:
    return LogFilter(start_time=f"now-{int(hours * 60)}m")


async def test_latest_page_walks_the_tenant_time_index_of_the_last_day(loaded: Loaded) -> None:
    f = compile_filter(window(24), NOW)
    plan = await explain(loaded, entries_statement(loaded.tenant, f, sort="desc", limit=101))
    assert_indexed(loaded, plan, "tenant_id_timestamp")
    assert partitions(plan) <= days_of(NOW - timedelta(hours=24))
    assert f"log_entries_p{NOW - timedelta(days=2):%Y%m%d}" not in plan


async def test_deep_cursor_page_starts_at_its_key_in_the_index(loaded: Loaded) -> None:
    f = compile_filter(window(24), NOW)
    key = (NOW - timedelta(hours=20), uuid.UUID(int=0))
    plan = await explain(
        loaded, entries_statement(loaded.tenant, f, sort="desc", after=key, limit=101)
    )
    assert_indexed(loaded, plan, "tenant_id_timestamp")
    assert re.search(r"Index Cond: .*\"timestamp\" <= ", plan), plan
    assert partitions(plan) <= days_of(NOW - timedelta(hours=24), NOW - timedelta(hours=20))


async def test_service_and_min_level_in_an_hour_use_the_service_index(loaded: Loaded) -> None:
    f = compile_filter(
        LogFilter(service_name="payment", min_level="WARN", start_time="now-1h"), NOW
    )
    plan = await explain(loaded, entries_statement(loaded.tenant, f, sort="desc", limit=101))
    assert_indexed(loaded, plan, "tenant_id_service_name_timestamp_lev")  # name cut at 63
    # The level is tested in the index: no entry of another level is fetched to look.
    assert re.search(r"Index Cond: .*\(level >= ", plan), plan
    assert partitions(plan) <= days_of(NOW - timedelta(hours=1))
    # Its total, counted by the page's statement (pages.counted_first), reads the same
    # index alone, once, and no other day.
    counted = entries_statement(loaded.tenant, f, sort="desc", limit=101, count_cap=10_001)
    plan = await explain(loaded, counted)
    assert "InitPlan" in plan and "SubPlan" not in plan, plan
    assert re.search(r"Index Only Scan using \S*tenant_id_service_name_timestamp_lev", plan), plan
    assert_indexed(loaded, plan, "tenant_id_service_name_timestamp_lev")
    assert partitions(plan) <= days_of(NOW - timedelta(hours=1))


@pytest.mark.parametrize("field", ["trace_id", "request_id"])
async def test_trace_and_request_lookups_use_their_index(loaded: Loaded, field: str) -> None:
    value = loaded.sample[1] if field == "trace_id" else loaded.sample[2]
    f = compile_filter(LogFilter(**{field: value}), NOW)
    plan = await explain(loaded, entries_statement(loaded.tenant, f, sort="asc", limit=1001))
    assert_indexed(loaded, plan, field)
    bounded = compile_filter(LogFilter(**{field: value}, start_time="now-1h"), NOW)
    plan = await explain(loaded, entries_statement(loaded.tenant, bounded, sort="asc", limit=1001))
    assert partitions(plan) <= days_of(NOW - timedelta(hours=1))


async def test_id_and_user_lookups_use_their_index(loaded: Loaded) -> None:
    plan = await explain(loaded, entry_statement(loaded.tenant, loaded.sample[0]))
    assert_indexed(loaded, plan, "log_entries_p\\d+_id_idx")
    f = compile_filter(LogFilter(user_id=loaded.sample[3], start_time="now-24h"), NOW)
    plan = await explain(loaded, entries_statement(loaded.tenant, f, sort="desc", limit=101))
    assert_indexed(loaded, plan, "user_id")
    assert partitions(plan) <= days_of(NOW - timedelta(hours=24))


async def test_word_search_of_the_last_day_reads_closed_days_by_index(loaded: Loaded) -> None:
    """Yesterday (closed, trigram-indexed) is read through an index; today's partition
    has no trigram index by design, and at this test's size the planner may scan it."""
    f = compile_filter(LogFilter(search="timeout", start_time="now-24h"), NOW)
    plan = await explain(loaded, entries_statement(loaded.tenant, f, sort="desc", limit=101))
    yesterday = f"log_entries_p{NOW - timedelta(days=1):%Y%m%d}"
    assert f"Seq Scan on {yesterday}" not in plan, plan
    assert re.search(rf"Index Scan on {yesterday}_|using {yesterday}_", plan), plan
    assert partitions(plan) <= days_of(NOW - timedelta(hours=24))


async def test_search_of_a_closed_day_uses_the_trigram_index_through_the_tenant_view(
    loaded: Loaded,
) -> None:
    yesterday = (NOW - timedelta(days=1)).replace(hour=0, minute=0, second=0)
    f = compile_filter(
        LogFilter(
            search='"checksum mismatch"',
            start_time=yesterday.isoformat(),
            end_time=(yesterday + timedelta(days=1)).isoformat(),
        ),
        NOW,
    )
    plan = await explain(loaded, count_statement(loaded.tenant, f, 10_001))
    assert_indexed(loaded, plan, "search")
    assert partitions(plan) == {f"log_entries_p{yesterday:%Y%m%d}"}


@pytest.mark.parametrize(
    ("dims", "bucket"),
    [(("service_name", "level"), None), (("level",), timedelta(hours=1))],
    ids=["stats", "aggregate"],
)
async def test_counting_a_search_of_a_closed_day_uses_the_trigram_index_through_the_tenant_view(
    loaded: Loaded, dims: tuple[str, ...], bucket: timedelta | None
) -> None:
    """Stats and aggregate count a search from the rows (no rollup has words): through the
    view, as the list does, not the table's row-level security, where ILIKE (not leakproof)
    is applied after the policy and the trigram index is never used."""
    yesterday = (NOW - timedelta(days=1)).replace(hour=0, minute=0, second=0)
    f = compile_filter(
        LogFilter(
            search='"checksum mismatch"',
            start_time=yesterday.isoformat(),
            end_time=(yesterday + timedelta(days=1)).isoformat(),
        ),
        NOW,
    )
    assert f.start is not None and f.end is not None
    spans = rollups.plan_spans(f.start, f.end, rollups=f.uses_only_rollup_dimensions)
    assert [s.source for s in spans] == [rollups.Source.RAW]
    plan = await explain(loaded, rollups.spans_statement(loaded.tenant, f, spans, dims, bucket))
    assert_indexed(loaded, plan, "search")
    assert partitions(plan) == {f"log_entries_p{yesterday:%Y%m%d}"}


async def test_counts_from_the_rollups_are_planned_without_parallel_workers(
    loaded: Loaded,
) -> None:
    """Histograms and stats from the rollups (shared/rollups.py) run through
    `fetch_counts(serial=True)`: their cells are few, and workers cost more to start than they save.
    The planner is made to favour workers at any size here, as it does for a busy
    tenant's day of minute cells at 10M rows; the transaction gets its setting back."""
    day = LogFilter(start_time=(NOW - timedelta(days=1)).isoformat(), end_time=NOW.isoformat())
    f = compile_filter(day, NOW)
    assert f.start is not None and f.end is not None
    async with tenant_scope(loaded.pool, loaded.tenant) as conn:
        for name in ("parallel_setup_cost", "parallel_tuple_cost", "min_parallel_table_scan_size"):
            await conn.execute(f"SET LOCAL {name} = 0")
        spans = rollups.plan_spans(
            f.start, f.end, rollups=True, coarsest=rollups.MINUTE,
            minutes=rollups.Source.LEVEL_MINUTE,
            compacted_until=await rollups.compacted_until(conn),
        )  # fmt: skip
        cells = rollups.cells_statement(loaded.tenant, f, spans, ("level",), rollups.MINUTE)
        explain = b"EXPLAIN " + cells.query.as_bytes(conn)
        cur = await conn.execute(explain, cells.params, prepare=False)
        as_planned = "\n".join(row[0] for row in await cur.fetchall())
        serial = "\n".join(
            row[0] for row in await rollups.fetch_counts(conn, explain, cells.params, serial=True)
        )
        cur = await conn.execute("SHOW max_parallel_workers_per_gather")
        after = await cur.fetchone()
    assert "Gather" in as_planned  # what the serial fetch prevents
    assert "Gather" not in serial
    assert after is not None and after[0] != "0"


async def test_a_whole_range_far_past_the_cap_is_the_planners_estimate_uncounted(
    loaded: Loaded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page's total (services/gateway/query/pages.py): a tenant's time range with no
    other term, whose estimate is ten times the cap, is that estimate, flagged, never
    below what the page showed; a narrower filter is counted up to the cap first. The
    cap is lowered so that 40,000 rows are far past it. (A filter of service, level and
    environment only is counted from the rollups instead: tests/test_query.py.)"""
    monkeypatch.setattr(pages, "COUNT_CAP", 100)
    whole = compile_filter(window(24 * DAYS), NOW)
    narrow = compile_filter(
        LogFilter(start_time=f"now-{DAYS}d", levels=["ERROR"], metadata={"region": "eu-west-1"}),
        NOW,
    )
    async with tenant_scope(loaded.pool, loaded.tenant) as conn:
        planned = await estimate_count(conn, loaded.tenant, whole)
        # (It may equal the count by chance: each partition is small enough for ANALYZE
        # to read whole, so only the flag tells an estimate.)
        assert planned > 1_000
        assert await pages.count_total(conn, loaded.tenant, whole) == (planned, True)
        assert await pages.count_total(conn, loaded.tenant, whole, at_least=10**8) == (
            10**8,
            True,
        )
        errors = await count_up_to(conn, loaded.tenant, narrow, 10**9)
        assert errors > 100  # past the cap: counted to it, then the estimate if higher
        total, estimated = await pages.count_total(conn, loaded.tenant, narrow)
        assert estimated and total >= 101
        monkeypatch.setattr(pages, "COUNT_CAP", errors)
        assert await pages.count_total(conn, loaded.tenant, narrow) == (errors, False)
