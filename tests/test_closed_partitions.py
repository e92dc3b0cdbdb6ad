"""Closed partitions: rewritten once, in tenant and service order, with the search index;
nothing lost."""

from __future__ import annotations

import asyncio
import signal
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from services.janitor import closed_partitions, metrics
from services.janitor.closed_partitions import SEARCH_INDEX_SUFFIX, settle_closed_partition
from shared.settings import Settings
from tests.polling import wait_until
from tests.processes import Service, service_env

TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
YESTERDAY = TODAY - timedelta(days=1)
TENANTS = [uuid.UUID(int=n) for n in (3, 1, 2)]
ROW = (
    'INSERT INTO log_entries (id, tenant_id, "timestamp", level, service_name, message, '
    "trace_id, metadata, environment) VALUES (%s, %s, %s, 3, %s, %s, %s, %s, 'prod')"
)


def settled(db: psycopg.Connection) -> set[str]:
    return {
        str(row[0])
        for row in db.execute(
            "SELECT tablename FROM pg_indexes WHERE indexname = tablename || %s",
            (SEARCH_INDEX_SUFFIX,),
        )
    }


def fill(db: psycopg.Connection, day: datetime, rows: int = 300) -> None:
    """Rows of three tenants and three services interleaved in arrival order, as the
    writer leaves them."""
    db.execute("SELECT ensure_log_partition(%s)", (day,))
    with db.transaction():
        for i in range(rows):
            tenant = TENANTS[i % len(TENANTS)]
            db.execute(
                ROW,
                (
                    uuid.uuid4(), tenant, day + timedelta(seconds=i * 17),
                    ("api", "billing", "web")[i % 5 % 3],
                    f"payment {i} expired" if i % 4 == 0 else f"request {i} served",
                    f"trace-{i}", f'{{"k": {i}}}',
                ),
            )  # fmt: skip


def outcomes(outcome: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "minisource_janitor_closed_partitions_total", {"outcome": outcome}
    )
    assert value is not None
    return value


def rows_of(db: psycopg.Connection, partition: str) -> list[tuple[object, ...]]:
    return sorted(tuple(row) for row in db.execute(f"SELECT * FROM {partition}"))


def test_closed_partitions_are_settled_one_per_call_oldest_first(db: psycopg.Connection) -> None:
    older = [
        db.execute("SELECT ensure_log_partition(%s)", (TODAY - timedelta(days=d),)).fetchone()[0]
        for d in (2, 1)
    ]
    assert settle_closed_partition(db, before=TODAY) == older[0]
    assert settled(db) == {older[0]}
    assert settle_closed_partition(db, before=TODAY) == older[1]
    assert settle_closed_partition(db, before=TODAY) is None  # today's is still open
    assert settled(db) == set(older)
    # A later boundary closes today's partition as well.
    tomorrow = TODAY + timedelta(days=1)
    assert settle_closed_partition(db, before=tomorrow) == f"log_entries_p{TODAY:%Y%m%d}"


def test_a_day_closed_less_than_the_grace_ago_is_left_for_late_entries(
    db: psycopg.Connection,
) -> None:
    db.execute("SELECT ensure_log_partition(%s)", (YESTERDAY,))
    just_closed = TODAY + closed_partitions.LATE_ENTRY_GRACE / 2
    assert settle_closed_partition(db, before=just_closed - closed_partitions.LATE_ENTRY_GRACE) \
        is None  # fmt: skip
    assert settle_closed_partition(db, before=TODAY) == f"log_entries_p{YESTERDAY:%Y%m%d}"


def test_the_rewrite_keeps_every_row_and_index_and_orders_rows_by_tenant_and_service(
    db: psycopg.Connection,
) -> None:
    fill(db, YESTERDAY)
    partition = f"log_entries_p{YESTERDAY:%Y%m%d}"
    before = rows_of(db, partition)
    bound = db.execute(
        "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = %s", (partition,)
    ).fetchone()

    settled_before = outcomes("settled")
    assert settle_closed_partition(db, before=TODAY) == partition
    assert outcomes("settled") == settled_before + 1

    assert rows_of(db, partition) == before
    assert (
        db.execute(
            "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = %s", (partition,)
        ).fetchone()
        == bound
    )
    # Physical order: each tenant's rows together, in them each service's, newest first
    # (what a service's page of a past hour reads: neighbouring rows, not one a page).
    in_order = [
        (tenant, service, -ts.timestamp())
        for tenant, service, ts in db.execute(
            f'SELECT tenant_id, service_name, "timestamp" FROM {partition} ORDER BY ctid'
        )
    ]
    assert in_order == sorted(in_order)
    assert len({service for _, service, _ in in_order}) == 3
    # Every index of the parent has its child on the partition, plus the search index.
    missing = db.execute(
        "SELECT p.indexrelid::regclass::text FROM pg_index p "
        "WHERE p.indrelid = 'log_entries'::regclass AND NOT EXISTS ("
        "  SELECT 1 FROM pg_inherits i JOIN pg_index c ON c.indexrelid = i.inhrelid "
        "  WHERE i.inhparent = p.indexrelid AND c.indrelid = %s::regclass)",
        (partition,),
    ).fetchall()
    assert missing == []
    names = {
        str(row[0]) for row in db.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = %s", (partition,)
        )
    }  # fmt: skip
    assert partition + SEARCH_INDEX_SUFFIX in names
    assert not [name for name in names if "_sorted" in name]
    # Its B-trees are built full: only a late entry or retention changes a closed day.
    loose = db.execute(
        "SELECT c.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid "
        "JOIN pg_am a ON a.oid = c.relam WHERE x.indrelid = %s::regclass AND a.amname = 'btree' "
        "AND c.reloptions IS DISTINCT FROM '{fillfactor=100}'",
        (partition,),
    ).fetchall()
    assert loose == []
    assert db.execute("SELECT count(*) FROM pg_class WHERE relname LIKE '%\\_sorted'").fetchone() \
        == (0,)  # fmt: skip
    # A tenant's search is answered through the parent as before.
    count = db.execute(
        'SELECT count(*) FROM log_entries WHERE tenant_id = %s AND (message COLLATE "C") '
        "ILIKE '%%EXPIRED%%'",
        (TENANTS[1],),
    ).fetchone()
    assert count == (25,)


@pytest.fixture
def quick_swap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many short tries a moment apart, so that the give-up path is reached in a test's time."""
    monkeypatch.setattr(closed_partitions, "SWAP_TRIES", 40)
    monkeypatch.setattr(closed_partitions, "SWAP_PAUSE_SECONDS", 0.05)


def lock_seen(db: psycopg.Connection, partition: str, mode: str, *, granted: bool) -> bool:
    """Whether another session holds (or waits for) `mode` on `partition`: polled, as
    nothing announces a lock taken."""
    row = db.execute(
        "SELECT 1 FROM pg_locks WHERE relation = %s::regclass AND mode = %s AND granted = %s "
        "AND pid <> pg_backend_pid()",
        (partition, mode, granted),
    ).fetchone()
    return row is not None


async def test_a_late_entry_during_the_rewrite_waits_for_it_and_is_kept(
    db: psycopg.Connection,
    settings: Settings,
    quick_swap: None,
) -> None:
    """A reader keeps the swap from its lock while a late entry for the day arrives; the
    rewrite then gives up rather than make that writer wait on it (the writer holds
    log_entries: a deadlock), and the entry lands in the partition as it is."""
    fill(db, YESTERDAY, rows=60)
    partition = f"log_entries_p{YESTERDAY:%Y%m%d}"
    conninfo = settings.postgres_conninfo()
    gave_up = outcomes("gave_up")
    with (
        psycopg.connect(conninfo) as reader,
        psycopg.connect(conninfo, autocommit=True) as janitor,
    ):
        reader.execute("SELECT count(*) FROM log_entries")  # ACCESS SHARE until commit
        settling = asyncio.create_task(
            asyncio.to_thread(settle_closed_partition, janitor, before=TODAY)
        )
        await wait_until(
            lambda: lock_seen(db, partition, "ShareLock", granted=True),
            within=30,
            what="the rewrite's lock",
        )

        late_id = uuid.uuid4()

        def write_late() -> None:
            with psycopg.connect(conninfo) as writer:
                writer.execute(
                    ROW,
                    (
                        late_id,
                        TENANTS[0],
                        YESTERDAY + timedelta(hours=23),
                        "api",
                        "late",
                        None,
                        None,
                    ),
                )

        writing = asyncio.create_task(asyncio.to_thread(write_late))
        await wait_until(
            lambda: lock_seen(db, partition, "RowExclusiveLock", granted=False),
            within=30,
            what="the late entry waiting",
        )
        reader.commit()
        assert await asyncio.wait_for(settling, 60) is None  # given up, tried again next run
        await asyncio.wait_for(writing, 60)  # no deadlock, no error

    assert outcomes("gave_up") == gave_up + 1
    assert settled(db) == set()
    assert db.execute("SELECT count(*) FROM log_entries WHERE id = %s", (late_id,)).fetchone() == (
        1,
    )
    assert settle_closed_partition(db, before=TODAY) == partition
    assert db.execute(f"SELECT count(*) FROM {partition}").fetchone() == (61,)


async def test_sigterm_cancels_a_rewrite_in_progress_and_leaves_the_partition_as_it_was(
    db: psycopg.Connection, settings: Settings, tmp_path: Path
) -> None:
    """A rewrite outlasts a stop grace period: SIGTERM cancels it (rolled back whole), and
    the janitor exits at once instead of being killed mid-way."""
    day = TODAY - timedelta(days=2)  # closed for over LATE_ENTRY_GRACE whatever the hour
    fill(db, day, rows=30)
    partition = f"log_entries_p{day:%Y%m%d}"
    with psycopg.connect(settings.postgres_conninfo()) as late:
        # A late entry's transaction still open: the rewrite waits for it.
        late.execute(ROW, (uuid.uuid4(), TENANTS[0], day, "api", "late", None, None))
        with Service("services.janitor", service_env(settings), tmp_path) as janitor:

            def rewrite_waiting() -> bool:
                assert janitor.running(), janitor.output()[-3000:]
                return lock_seen(db, partition, "ShareLock", granted=False)

            await wait_until(rewrite_waiting, within=60, what="the janitor's rewrite")
            janitor.signal(signal.SIGTERM)
            # Not cancelled, it would wait for `late` as long as that stays open.
            assert janitor.wait(30) == 0, janitor.output()[-3000:]
        late.commit()
    assert settled(db) == set()
    assert db.execute(f"SELECT count(*) FROM {partition}").fetchone() == (31,)
    assert db.execute("SELECT count(*) FROM pg_class WHERE relname LIKE '%\\_sorted'").fetchone() \
        == (0,)  # fmt: skip


def test_a_closed_month_is_settled_as_a_day_is(db: psycopg.Connection) -> None:
    """PARTITION_INTERVAL=month: the partition is a month, its bound read from the catalog."""
    for (name,) in db.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'log_entries'::regclass"
    ).fetchall():
        db.execute(f'DROP TABLE "{name}"')
    db.execute("UPDATE log_settings SET value = 'month' WHERE key = 'partition_interval'")
    this_month = TODAY.replace(day=1)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    fill(db, last_month, rows=120)
    partition = f"log_entries_p{last_month:%Y%m}"
    before = rows_of(db, partition)

    assert settle_closed_partition(db, before=this_month) == partition

    assert rows_of(db, partition) == before
    assert settled(db) == {partition}
    assert settle_closed_partition(db, before=this_month) is None
