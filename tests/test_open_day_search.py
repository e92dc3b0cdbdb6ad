"""Today's past hours indexed for search: the janitor's partial index, and queries that
split their window to use it while reading exactly what they read whole."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from services.gateway.query.store import count_statement, count_up_to, fetch_entries
from services.janitor import open_day_search
from services.janitor.open_day_search import index_open_day
from shared import rollups
from shared.db import tenant_scope
from shared.filters import LogFilter, compile_filter
from shared.open_day_search import split_at
from shared.settings import Settings
from tests.polling import wait_until

DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
PARTITION = f"log_entries_p{DAY:%Y%m%d}"
SPLIT = DAY + timedelta(hours=6)
TENANTS = [uuid.UUID(int=n) for n in (1, 2, 3)]
ROWS = 20_000


def fill(db: psycopg.Connection) -> None:
    """ROWS entries of three tenants over the day's first 20 hours, in arrival order: a
    word in every fourth ("expired"), a rare one in every 500th ("needle")."""
    db.execute("SELECT ensure_log_partition(%s)", (DAY,))
    step = timedelta(hours=20) / ROWS
    columns = 'id, tenant_id, "timestamp", level, service_name, message, environment'
    with db.cursor() as cur, cur.copy(f"COPY log_entries ({columns}) FROM STDIN") as copy:
        for i in range(ROWS):
            message = (
                f"needle {i} found" if i % 500 == 0
                else f"payment {i} expired" if i % 4 == 0
                else f"request {i} served"
            )  # fmt: skip
            copy.write_row(
                (uuid.uuid4(), TENANTS[i % 3], DAY + step * i, 1 + i % 5, "api", message, "prod")
            )
    db.execute(f"ANALYZE {PARTITION}")


def search_indexes(db: psycopg.Connection) -> dict[str, tuple[bool, str]]:
    """The partition's indexes of this kind: name -> (valid, definition)."""
    rows = db.execute(
        "SELECT c.relname, x.indisvalid, pg_get_indexdef(x.indexrelid) "
        "FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid "
        "WHERE x.indrelid = %s::regclass AND c.relname LIKE '%%search_to%%'",
        (PARTITION,),
    ).fetchall()
    return {str(name): (bool(valid), str(definition)) for name, valid, definition in rows}


def at(hours: float, minutes: float = 0) -> datetime:
    return DAY + timedelta(hours=hours, minutes=minutes)


def test_the_split_comes_a_quarter_of_an_hour_after_a_three_hour_bound() -> None:
    assert split_at(at(3, 14)) is None  # the index of 03:00 may not be built yet
    assert split_at(at(3, 16)) == at(3)
    assert split_at(at(23, 59)) == at(21)
    # Just after midnight the day before's last bound still serves (its partition keeps
    # its index until the janitor rewrites the closed day).
    assert split_at(at(24, 5)) == at(21)


def test_the_hours_past_are_indexed_and_only_the_newest_index_is_kept(
    db: psycopg.Connection,
) -> None:
    fill(db)
    assert index_open_day(db, now=at(1)) is None  # no bound yet on this day
    assert index_open_day(db, now=at(3, 3)) == f"{PARTITION}_search_to_03"
    indexes = search_indexes(db)
    assert list(indexes) == [f"{PARTITION}_search_to_03"]
    valid, definition = indexes[f"{PARTITION}_search_to_03"]
    assert valid
    assert 'gin (tenant_id, message COLLATE "C" gin_trgm_ops)' in definition
    assert f"WHERE (\"timestamp\" < '{DAY:%Y-%m-%d} 03:00:00+00'" in definition
    assert index_open_day(db, now=at(4)) is None  # built already
    assert index_open_day(db, now=at(6, 3)) == f"{PARTITION}_search_to_06"
    assert list(search_indexes(db)) == [f"{PARTITION}_search_to_06"]
    # A day without a partition of its own (none made, or month partitions): nothing.
    assert index_open_day(db, now=at(24 * 400 + 6, 3)) is None


def test_a_partition_made_by_hand_with_other_bounds_is_passed_over(
    db: psycopg.Connection,
) -> None:
    """Bounds are read from the catalog; one that is not a date (MINVALUE) is no day."""
    fill(db)
    db.execute(
        "CREATE TABLE log_entries_before_2000 PARTITION OF log_entries "
        "FOR VALUES FROM (MINVALUE) TO ('2000-01-01')"
    )
    assert index_open_day(db, now=at(6, 3)) == f"{PARTITION}_search_to_06"


def test_a_build_cut_short_is_dropped_and_built_again(db: psycopg.Connection) -> None:
    fill(db)
    name = f"{PARTITION}_search_to_06"
    # What a cancelled CREATE INDEX CONCURRENTLY leaves: an invalid index of that name.
    with pytest.raises(psycopg.errors.UniqueViolation):
        db.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {name} ON {PARTITION} (level)")
    assert search_indexes(db)[name][0] is False
    assert index_open_day(db, now=at(6, 3)) == name
    valid, definition = search_indexes(db)[name]
    assert valid
    assert "gin_trgm_ops" in definition


def test_no_build_is_begun_while_a_long_transaction_runs(
    db: psycopg.Connection, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A concurrent build would wait for it at its end, holding up the janitor's run."""
    fill(db)
    monkeypatch.setattr(open_day_search, "OLD_TRANSACTION_SECONDS", 0)
    with psycopg.connect(settings.postgres_conninfo()) as reader:
        reader.execute("SELECT 1")  # a transaction left open, as a long export's
        assert index_open_day(db, now=at(6, 3)) is None
        assert search_indexes(db) == {}
    assert index_open_day(db, now=at(6, 3)) == f"{PARTITION}_search_to_06"


async def test_a_build_cancelled_while_it_waits_is_replaced_by_the_next_run(
    db: psycopg.Connection, settings: Settings
) -> None:
    """What SIGTERM does to a build (services/janitor/__main__.py, `Rewrites.stop`): its
    statement cancelled, it leaves an invalid index, which the next run drops and builds
    again."""
    fill(db)
    name = f"{PARTITION}_search_to_06"
    with (
        psycopg.connect(settings.postgres_conninfo()) as writer,
        psycopg.connect(settings.postgres_conninfo(), autocommit=True) as janitor,
    ):
        # A writer's transaction still open: the build waits for it before reading.
        writer.execute(
            'INSERT INTO log_entries (id, tenant_id, "timestamp", level, service_name, message) '
            "VALUES (%s, %s, %s, 3, 'api', 'late')",
            (uuid.uuid4(), TENANTS[0], at(1)),
        )
        build = asyncio.ensure_future(asyncio.to_thread(index_open_day, janitor, now=at(6, 3)))

        def waiting() -> bool:
            row = db.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND query LIKE 'CREATE INDEX%%' AND wait_event_type = 'Lock'"
            ).fetchone()
            return row is not None and row[0] == 1

        await wait_until(waiting, within=30, what="the build waiting for the writer")
        janitor.cancel_safe(timeout=5)
        with pytest.raises(psycopg.errors.QueryCanceled):
            await build
        writer.rollback()
    assert search_indexes(db)[name][0] is False
    assert index_open_day(db, now=at(6, 3)) == name
    assert search_indexes(db)[name][0] is True


@pytest.fixture
def indexed(db: psycopg.Connection) -> None:
    """The day filled, its hours before 06:00 indexed."""
    fill(db)
    index_open_day(db, now=at(6, 3))


@pytest.mark.parametrize("word", ["needle", "expired"])
@pytest.mark.usefixtures("indexed")
async def test_a_split_search_reads_the_same_entries_and_counts(
    pool: AsyncConnectionPool, word: str
) -> None:
    tenant = TENANTS[0]
    f = compile_filter(
        LogFilter(search=word, start_time=f"{at(0):%Y-%m-%dT%H:%M:%SZ}",
                  end_time=f"{at(20):%Y-%m-%dT%H:%M:%SZ}"),
        at(20),
    )  # fmt: skip
    async with tenant_scope(pool, tenant) as conn:
        for sort in ("desc", "asc"):
            for limit in (3, 40, 5_000):
                whole = await fetch_entries(conn, tenant, f, sort=sort, limit=limit)
                split = await fetch_entries(conn, tenant, f, sort=sort, limit=limit, split=SPLIT)
                assert [e.id for e in split] == [e.id for e in whole], (sort, limit)
                # A cursor's page: after the third entry of the first.
                key = (whole[2].timestamp, whole[2].id)
                whole = await fetch_entries(conn, tenant, f, sort=sort, after=key, limit=limit)
                split = await fetch_entries(
                    conn, tenant, f, sort=sort, after=key, limit=limit, split=SPLIT
                )
                assert [e.id for e in split] == [e.id for e in whole], (sort, limit, "cursor")
            # A numbered page past the first is read whole (an offset spans both parts).
            deep = await fetch_entries(conn, tenant, f, sort=sort, offset=2, limit=3, split=SPLIT)
            every = await fetch_entries(conn, tenant, f, sort=sort, limit=5)
            assert [e.id for e in deep] == [e.id for e in every[2:]]
        for cap in (5, 1_000_000):
            assert await count_up_to(conn, tenant, f, cap, split=SPLIT) == await count_up_to(
                conn, tenant, f, cap
            )
        for bucket in (None, rollups.HOUR, timedelta(days=1)):
            spans = [rollups.Span(rollups.Source.RAW, at(0), at(20))]
            counted = []
            for split_at_ in (None, SPLIT):
                s = rollups.spans_statement(tenant, f, spans, ("level",), bucket, split=split_at_)
                cur = await conn.execute(s.query, s.params, prepare=False)
                counted.append(summed(await cur.fetchall()))
            assert counted[0] == counted[1]
            assert sum(n for n, _, _ in counted[0].values()) > 0


def summed(rows: list[tuple[object, ...]]) -> dict[tuple[object, ...], tuple[int, object, object]]:
    """spans_statement's rows (bucket, level, n, first, last, step) added up per bucket
    and level, as its readers do: (count, first, last)."""
    out: dict[tuple[object, ...], tuple[int, object, object]] = {}
    for bucket, level, n, first, last, _ in rows:
        if (bucket, level) in out:
            m, f, la = out[(bucket, level)]
            out[(bucket, level)] = (m + int(n), min(f, first), max(la, last))  # type: ignore[type-var]
        else:
            out[(bucket, level)] = (int(n), first, last)
    return out


@pytest.mark.usefixtures("indexed")
async def test_the_older_part_of_a_rare_word_is_read_through_the_index(
    pool: AsyncConnectionPool,
) -> None:
    tenant = TENANTS[0]
    f = compile_filter(
        LogFilter(search="needle", start_time=f"{at(0):%Y-%m-%dT%H:%M:%SZ}",
                  end_time=f"{at(20):%Y-%m-%dT%H:%M:%SZ}"),
        at(20),
    )  # fmt: skip
    statement = count_statement(tenant, f, 1001, split=SPLIT)
    async with tenant_scope(pool, tenant) as conn:
        cur = await conn.execute(
            b"EXPLAIN " + statement.query.as_bytes(conn), statement.params, prepare=False
        )
        plan = "\n".join(row[0] for row in await cur.fetchall())
    assert f"Bitmap Index Scan on {PARTITION}_search_to_06" in plan, plan
