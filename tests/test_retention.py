"""The janitor's retention (services/janitor/retention.py): each tenant keeps exactly its
window, whole partitions past every window go, size quotas remove the oldest days first,
stats agree with what remains, one janitor acts at a time. Time is the run's `now`: a
fixed instant in the past, never the wall clock, and no test sleeps."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from psycopg import sql

from services.janitor.__main__ import Rewrites, run_once
from services.janitor.lock import LOCK_KEY
from services.janitor.pacing import Pace
from services.janitor.removal import rows_statement
from services.janitor.retention import retention_once
from services.writer.consumer import Delivery
from services.writer.store import ensure_partitions, partition_starts, register_dumpers, store_batch
from shared.compaction import compact
from shared.model import ENTRY_FIXED_BYTES, LEVEL_NAMES, Level, StoredMessage, StoredRow, entry_size
from shared.retention import GIB
from shared.settings import Settings
from tests.conftest import tenant_headers
from tests.test_stats import iso, rollups_disagree, set_watermark

NOW = datetime(2025, 3, 15, 10, 30, tzinfo=UTC)
TODAY = NOW.date()
DAYS_OF_DATA = 40

T1 = uuid.UUID("00000000-0000-4000-8000-000000000001")
T7 = uuid.UUID("00000000-0000-4000-8000-000000000007")
T30 = uuid.UUID("00000000-0000-4000-8000-000000000030")
DEFAULT = uuid.UUID("00000000-0000-4000-8000-0000000000df")


@dataclass(frozen=True)
class Row:
    tenant: uuid.UUID
    stored: StoredRow

    @property
    def ts(self) -> datetime:
        return self.stored[1]

    @property
    def day(self) -> date:
        return self.ts.date()

    @property
    def size(self) -> int:
        """What log_counts counts for the row (README, "Retention")."""
        return entry_size(self.stored) + ENTRY_FIXED_BYTES


def make_row(tenant: uuid.UUID, ts: datetime, i: int, pad: int = 0) -> Row:
    stored: StoredRow = (
        uuid.uuid4().bytes,
        ts,
        1 + i % 5,
        ("api", "worker", "billing")[i % 3],
        f"message {i} " + "x" * pad,
        f"{i:032x}" if i % 4 == 0 else None,
        None,
        "user-1" if i % 2 else None,
        None,
        b'{"attempt": %d}' % i if i % 2 else None,
        None,
        "host-a",
        ("production", "staging", None)[i % 3],
    )
    return Row(tenant, stored)


def days_ago(n: int) -> datetime:
    return datetime(TODAY.year, TODAY.month, TODAY.day, tzinfo=UTC) - timedelta(days=n)


async def store(settings: Settings, rows: list[Row]) -> None:
    """Through the writer's own transaction (services/writer/store.py): partitions made,
    rows COPYed, log_counts and the coarser rollups upserted as in production."""
    async with await psycopg.AsyncConnection.connect(
        settings.postgres_conninfo(), autocommit=True
    ) as conn:
        register_dumpers(conn)
        await ensure_partitions(
            conn, partition_starts((r.stored for r in rows), settings.partition_interval)
        )
        deliveries = []
        for tenant in sorted({r.tenant for r in rows}):
            mine = [r.stored for r in rows if r.tenant == tenant]
            for i in range(0, len(mine), 500):
                message = StoredMessage(tenant, NOW, mine[i : i + 500])
                deliveries.append(Delivery("test", f"{tenant}-{i}", b"", message))
        await store_batch(conn, deliveries)


async def load(settings: Settings, rows: list[Row]) -> None:
    """Stored with the rollup watermark 10 days back, then compacted to NOW: the hourly
    and daily cells of older days come from the writer (late entries), of the last ten
    days from compaction, and the days after NOW are in log_counts only."""
    set_watermark(settings.postgres_conninfo(), NOW - timedelta(days=10))
    await store(settings, rows)
    with psycopg.connect(settings.postgres_conninfo()) as conn:
        compact(conn, now=NOW)


def add_policy(
    db: psycopg.Connection,
    tenant: uuid.UUID,
    days: int,
    *,
    max_size_gb: float | None = None,
    archive_path: str | None = None,
) -> None:
    db.execute(
        "INSERT INTO log_retention_policies (id, tenant_id, retention_days, max_size_gb, "
        "archive_enabled, archive_path) VALUES (%s, %s, %s, %s, %s, %s)",
        (uuid.uuid4(), tenant, days, max_size_gb, archive_path is not None, archive_path),
    )


def per_tenant_day(db: psycopg.Connection) -> Counter[tuple[uuid.UUID, date]]:
    rows = db.execute(
        "SELECT tenant_id, (\"timestamp\" AT TIME ZONE 'UTC')::date, count(*) "
        "FROM log_entries GROUP BY 1, 2"
    ).fetchall()
    return Counter({(t, d): n for t, d, n in rows})


def partitions(db: psycopg.Connection) -> dict[str, tuple[datetime, datetime]]:
    rows = db.execute(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'log_entries'::regclass"
    ).fetchall()
    found = {}
    for name, bound in rows:
        lo, hi = bound.split("'")[1], bound.split("'")[3]
        found[name] = (datetime.fromisoformat(lo), datetime.fromisoformat(hi))
    return found


def last_run(db: psycopg.Connection) -> dict[str, Any]:
    row = db.execute(
        "SELECT started_at, finished_at, dropped_partitions, deleted_rows, deleted_bytes, "
        "archived_rows, archived_bytes, archived_files, actions, errors "
        "FROM retention_runs ORDER BY id DESC LIMIT 1"
    ).fetchone()
    assert row is not None
    names = ["started_at", "finished_at", "dropped_partitions", "deleted_rows", "deleted_bytes"]
    names += ["archived_rows", "archived_bytes", "archived_files", "actions", "errors"]
    return dict(zip(names, row, strict=True))


@dataclass(frozen=True)
class FakeResult:
    rows: int
    bytes: int
    path: Path


class FakeArchive:
    """Stands in for the Parquet archive: records each tenant-day asked for and answers
    with its row count, as the real one does once the file and manifest are durable."""

    def __init__(self, fail_for: set[uuid.UUID] | None = None) -> None:
        self.calls: list[tuple[uuid.UUID, date, int]] = []
        self.fail_for = fail_for or set()

    def __call__(
        self,
        conn: psycopg.Connection,
        root: Path,
        path: str,
        tenant: uuid.UUID,
        day: date,
        pace: Pace,
    ) -> Any:
        if tenant in self.fail_for:
            raise OSError("disk full")
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        row = conn.execute(
            'SELECT count(*) FROM log_entries WHERE tenant_id = %s AND "timestamp" >= %s '
            'AND "timestamp" < %s',
            (tenant, start, start + timedelta(days=1)),
        ).fetchone()
        assert row is not None
        self.calls.append((tenant, day, row[0]))
        # What the janitor reads of services/janitor/archive.py's ArchiveResult.
        return FakeResult(row[0], 100 * row[0], root / path / str(tenant) / f"{day}.parquet")


def policy_rows() -> list[Row]:
    """40 days back and two ahead for each of four tenants: rows at the first and last
    microsecond of each day, one day of 250 rows (several delete batches), rows dated
    ahead of NOW."""
    rows = []
    for tenant in (T1, T7, T30, DEFAULT):
        for n in range(-2, DAYS_OF_DATA + 1):
            start = days_ago(n)
            stamps = [start, start + timedelta(hours=9, minutes=17, seconds=3.25)]
            stamps.append(start + timedelta(days=1, microseconds=-1))
            if n == 25:
                stamps += [start + timedelta(minutes=3 * k, seconds=7) for k in range(250)]
            rows += [make_row(tenant, ts, i) for i, ts in enumerate(stamps)]
    rows.append(make_row(T1, NOW + timedelta(minutes=5), 7))
    return rows


async def test_each_tenant_keeps_exactly_its_window_and_stats_agree(
    settings, db, client, caplog
) -> None:
    config = replace(settings, log_retention_days=20, retention_delete_batch=100)
    rows = policy_rows()
    await load(config, rows)
    add_policy(db, T1, 1)
    add_policy(db, T7, 7, archive_path="tenant-7")
    add_policy(db, T30, 30, archive_path="t30/logs")
    keeps = {T1: 1, T7: 7, T30: 30, DEFAULT: 20}
    before = per_tenant_day(db)
    assert len(before) == 4 * (DAYS_OF_DATA + 3)
    archive = FakeArchive()

    record = retention_once(config, NOW, archiver=archive)

    assert record is not None and record.errors == []
    cutoff = {t: TODAY - timedelta(days=d) for t, d in keeps.items()}
    expected = Counter({(t, d): n for (t, d), n in before.items() if d >= cutoff[t]})
    assert per_tenant_day(db) == expected
    # Partitions ending at or before the longest retention's cutoff (30 days) are gone;
    # the day at the cutoff stays, and so do the days ahead.
    longest = days_ago(30)
    kept = partitions(db)
    assert all(hi > longest for _, hi in kept.values())
    assert (longest, longest + timedelta(days=1)) in kept.values()
    assert (days_ago(-2), days_ago(-3)) in kept.values()
    assert record.dropped_partitions == DAYS_OF_DATA - 30
    assert db.execute(
        "SELECT count(*) FROM pg_class WHERE relname LIKE 'log_entries_p2025%%' "
        "AND NOT relispartition AND relkind = 'r'"
    ).fetchone() == (0,)

    # Archived before removal: every removed tenant-day of the two archiving tenants,
    # with its rows, and no other.
    removed = before - expected
    assert sorted(archive.calls) == sorted(
        (t, d, n) for (t, d), n in removed.items() if t in (T7, T30)
    )
    run = last_run(db)
    assert run["errors"] == []
    assert run["deleted_rows"] == sum(removed.values())
    assert run["deleted_bytes"] == sum(r.size for r in rows if r.day < cutoff[r.tenant])
    assert run["archived_files"] == len(archive.calls)
    assert run["archived_rows"] == sum(n for *_, n in archive.calls)
    assert run["started_at"] == NOW and run["finished_at"] >= NOW
    actions = {(uuid.UUID(a["tenant_id"]), date.fromisoformat(a["day"])): a for a in run["actions"]}
    assert {k: a["rows"] for k, a in actions.items()} == dict(removed)
    for (tenant, day), action in actions.items():
        by_partition = day < longest.date()
        assert action["reason"] == ("partition" if by_partition else "retention")
        assert action["archived"] == (tenant in (T7, T30))
        assert action["bytes"] == sum(r.size for r in rows if (r.tenant, r.day) == (tenant, day))

    # Everything counted agrees with the rows left, through the API; the DELETE trigger
    # alone kept the coarser rollups right (no cell needed removing by hand).
    assert rollups_disagree(db) == []
    assert "rollup cells left without their minutes" not in caplog.text
    window = {"start_time": iso(days_ago(45)), "end_time": iso(days_ago(-5))}
    for tenant in keeps:
        left = [r for r in rows if r.tenant == tenant and r.day >= cutoff[tenant]]
        await check_counts_agree(client, tenant, left, window)

    # A second run finds nothing to do.
    again = retention_once(config, NOW, archiver=archive)
    assert again is not None and again.actions == [] and again.dropped_partitions == 0
    assert per_tenant_day(db) == expected


async def check_counts_agree(
    client, tenant: uuid.UUID, left: list[Row], window: dict[str, str]
) -> None:
    headers = tenant_headers(tenant)
    stats = (await client.get("/api/v1/logs/stats", params=window, headers=headers)).json()
    assert stats["total_count"] == len(left)
    levels = Counter(Level(r.stored[2]).name for r in left)
    assert stats["by_level"] == {name: levels.get(name, 0) for name in LEVEL_NAMES}
    assert stats["by_service"] == dict(Counter(r.stored[3] for r in left))
    assert datetime.fromisoformat(stats["first_timestamp"]) == min(r.ts for r in left)

    response = await client.post(
        "/api/v1/logs/aggregate", json={**window, "interval": "1d"}, headers=headers
    )
    assert response.status_code == 200, response.text
    per_day = {
        datetime.fromisoformat(b["time"]).date(): b["count"]
        for b in response.json()["buckets"]
        if b["count"]
    }
    assert per_day == dict(Counter(r.day for r in left))

    response = await client.get("/api/v1/logs/services", params=window, headers=headers)
    services = {s["service_name"]: s["count"] for s in response.json()["services"]}
    assert services == dict(Counter(r.stored[3] for r in left))

    storage = (await client.get("/api/v1/logs/storage", headers=headers)).json()
    assert (storage["rows"], storage["bytes"]) == (len(left), sum(r.size for r in left))


async def test_nothing_younger_than_the_cutoff_goes_even_dated_far_ahead(settings, db) -> None:
    cutoff = days_ago(3)
    stamps = [
        cutoff - timedelta(microseconds=1),
        cutoff,
        NOW,
        NOW + timedelta(hours=20),
        NOW + timedelta(days=2),
        NOW + timedelta(days=200),
    ]
    rows = [make_row(T7, ts, i) for i, ts in enumerate(stamps)]
    await load(settings, rows)
    add_policy(db, T7, 3)

    record = retention_once(settings, NOW, archiver=FakeArchive())

    assert record is not None
    left = db.execute('SELECT "timestamp" FROM log_entries ORDER BY 1').fetchall()
    assert [ts for (ts,) in left] == stamps[1:]
    # A run whose clock is a day later takes the day that has now passed, nothing else.
    retention_once(settings, NOW + timedelta(days=1), archiver=FakeArchive())
    left = db.execute('SELECT "timestamp" FROM log_entries ORDER BY 1').fetchall()
    assert [ts for (ts,) in left] == stamps[2:]
    assert rollups_disagree(db) == []


def sized_rows(tenant: uuid.UUID, days: Iterable[int], per_day: int, pad: int) -> list[Row]:
    return [
        make_row(tenant, days_ago(n) + timedelta(hours=1, minutes=k), k, pad)
        for n in days
        for k in range(per_day)
    ]


def bytes_per_day(rows: list[Row]) -> dict[tuple[uuid.UUID, date], int]:
    out: Counter[tuple[uuid.UUID, date]] = Counter()
    for r in rows:
        out[(r.tenant, r.day)] += r.size
    return dict(out)


async def test_a_tenant_over_its_quota_loses_its_oldest_days_until_under(settings, db) -> None:
    # 15 days of ~130 kB each against a quota of 0.001 GiB (1,073,741 bytes).
    over = sized_rows(T1, range(15), 30, 4000)
    other = sized_rows(T7, range(15), 30, 4000)
    await load(settings, over + other)
    add_policy(db, T1, 365, max_size_gb=0.001, archive_path="quota")
    before = per_tenant_day(db)
    quota = int(0.001 * GIB)
    sizes = bytes_per_day(over)
    total, expected_gone = sum(sizes.values()), []
    for key in sorted(sizes, key=lambda k: k[1]):
        if total <= quota:
            break
        expected_gone.append(key)
        total -= sizes[key]
    assert 0 < len(expected_gone) < 15
    archive = FakeArchive()

    record = retention_once(settings, NOW, archiver=archive)

    assert record is not None and record.errors == []
    after = per_tenant_day(db)
    assert set(before) - set(after) == set(expected_gone)
    assert {k: n for k, n in after.items() if k[0] == T7} == {
        k: n for k, n in before.items() if k[0] == T7
    }
    assert {(a.tenant_id, a.day) for a in record.actions} == set(expected_gone)
    assert {a.reason for a in record.actions} == {"tenant_quota"}
    assert all(a.archived for a in record.actions)
    assert [(t, d) for t, d, _ in archive.calls] == expected_gone
    used = db.execute("SELECT sum(bytes) FROM log_counts WHERE tenant_id = %s", (T1,)).fetchone()
    assert used is not None and used[0] == total <= quota
    assert rollups_disagree(db) == []


async def test_the_global_quota_removes_the_oldest_day_across_tenants_largest_first(
    settings, db
) -> None:
    # Three tenants over the same ten days; T30's days are the largest, T7's the smallest.
    rows = sized_rows(T1, range(10), 20, 2000)
    rows += sized_rows(T7, range(10), 20, 500)
    rows += sized_rows(T30, range(10), 20, 4000)
    await load(settings, rows)
    sizes = bytes_per_day(rows)
    total = sum(sizes.values())
    # Room for all but a day and a half of everyone's oldest data.
    quota = total - sum(v for (t, d), v in sizes.items() if d == days_ago(9).date())
    quota -= sizes[(T30, days_ago(8).date())] // 2
    config = replace(settings, log_max_size_gb=quota / GIB)
    ordered = sorted(sizes, key=lambda k: (k[1], -sizes[k]))
    expected_gone = []
    for key in ordered:
        if total <= quota:
            break
        expected_gone.append(key)
        total -= sizes[key]
    assert expected_gone[:4] == [
        (T30, days_ago(9).date()),
        (T1, days_ago(9).date()),
        (T7, days_ago(9).date()),
        (T30, days_ago(8).date()),
    ]
    before = per_tenant_day(db)

    record = retention_once(config, NOW, archiver=FakeArchive())

    assert record is not None and record.errors == []
    assert [(a.tenant_id, a.day) for a in record.actions] == expected_gone
    assert {a.reason for a in record.actions} == {"global_quota"}
    assert set(before) - set(per_tenant_day(db)) == set(expected_gone)
    assert rollups_disagree(db) == []


async def test_a_quota_never_takes_the_day_being_written(settings, db) -> None:
    rows = sized_rows(T1, [0, 1], 300, 4000)
    rows += [make_row(T1, NOW + timedelta(hours=3), 1, 4000)]
    await load(settings, rows)
    add_policy(db, T1, 30, max_size_gb=0.001)
    # Today alone is over the quota, as is yesterday: yesterday goes, today stays.
    assert sum(r.size for r in rows if r.day == TODAY) > 0.001 * GIB

    record = retention_once(settings, NOW, archiver=FakeArchive())

    assert record is not None
    assert [(a.tenant_id, a.day, a.reason) for a in record.actions] == [
        (T1, days_ago(1).date(), "tenant_quota")
    ]
    assert set(per_tenant_day(db)) == {(T1, TODAY)}
    # Still over: the status says so.
    assert [(e.stage, e.tenant_id) for e in record.errors] == [("quota", T1)]


async def test_a_failed_archive_keeps_the_tenants_data_and_is_recorded(settings, db) -> None:
    rows = [make_row(t, days_ago(n) + timedelta(hours=2), n) for t in (T1, T7) for n in range(40)]
    await load(settings, rows)
    add_policy(db, T1, 5, archive_path="one")
    add_policy(db, T7, 5)
    before = per_tenant_day(db)

    record = retention_once(settings, NOW, archiver=FakeArchive(fail_for={T1}))

    assert record is not None
    after = per_tenant_day(db)
    # T1's rows all stay, and with them the partitions holding its days; T7 keeps 5 days.
    assert {k: n for k, n in after.items() if k[0] == T1} == {
        k: n for k, n in before.items() if k[0] == T1
    }
    assert sorted(d for t, d in after if t == T7) == [days_ago(n).date() for n in range(5, -1, -1)]
    assert record.dropped_partitions == 0
    # One error: T1 is left alone for the rest of the run once its archive failed.
    assert [e.stage for e in record.errors] == ["archive"]
    assert all(e.tenant_id == T1 and e.error == "disk full" for e in record.errors)
    run = last_run(db)
    assert run["errors"][0]["stage"] == "archive" and run["errors"][0]["tenant_id"] == str(T1)
    assert rollups_disagree(db) == []


async def test_an_interrupted_concurrent_detach_is_finished(settings, db) -> None:
    rows = [make_row(T1, days_ago(n) + timedelta(hours=2), n) for n in range(35)]
    await load(settings, rows)
    old = days_ago(33)
    name = f"log_entries_p{old:%Y%m%d}"
    # DETACH … CONCURRENTLY cancelled in its second transaction (a reader of log_entries
    # holds it up) leaves the partition pending detach, as a janitor killed there would.
    with psycopg.connect(settings.postgres_conninfo()) as reader:
        reader.execute("SELECT count(*) FROM log_entries")
        db.execute("SET statement_timeout = '300ms'")
        with pytest.raises(psycopg.errors.QueryCanceled):
            db.execute(
                sql.SQL("ALTER TABLE log_entries DETACH PARTITION {} CONCURRENTLY").format(
                    sql.Identifier(name)
                )
            )
        db.execute("RESET statement_timeout")
    pending = db.execute(
        "SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = %s::regclass", (name,)
    ).fetchone()
    assert pending == (True,)
    # And one detached before the janitor was killed, not yet dropped.
    older = f"log_entries_p{days_ago(34):%Y%m%d}"
    db.execute(sql.SQL("ALTER TABLE log_entries DETACH PARTITION {}").format(sql.Identifier(older)))

    record = retention_once(settings, NOW, archiver=FakeArchive())

    assert record is not None and record.errors == []
    assert db.execute("SELECT to_regclass(%s), to_regclass(%s)", (name, older)).fetchone() == (
        None,
        None,
    )
    assert all(hi > days_ago(30) for _, hi in partitions(db).values())
    assert sorted(d for _, d in per_tenant_day(db)) == [
        days_ago(n).date() for n in range(30, -1, -1)
    ]
    assert rollups_disagree(db) == []


async def test_monthly_partitions_go_whole_and_the_rest_by_rows(settings, db) -> None:
    for name in partitions(db):
        db.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
    db.execute("UPDATE log_settings SET value = 'month' WHERE key = 'partition_interval'")
    config = replace(settings, partition_interval="month")
    rows = [make_row(T1, days_ago(n) + timedelta(hours=5), n) for n in range(120)]
    await load(config, rows)

    record = retention_once(config, NOW, archiver=FakeArchive())

    assert record is not None and record.errors == []
    cutoff = days_ago(30)  # 2025-02-13: January and before end before it
    assert sorted(hi for _, hi in partitions(db).values()) == [
        datetime(2025, 3, 1, tzinfo=UTC),
        datetime(2025, 4, 1, tzinfo=UTC),
    ]
    assert record.dropped_partitions == 3  # November 2024 to January 2025
    assert min(d for _, d in per_tenant_day(db)) == cutoff.date()
    reasons = Counter(a.reason for a in record.actions)
    assert reasons == {"partition": 120 - 31 - 12, "retention": 12}
    assert rollups_disagree(db) == []


async def test_the_delete_batch_walks_the_tenant_index_of_one_partition(settings, db) -> None:
    day = days_ago(3)
    rows = [
        make_row(t, days_ago(n) + timedelta(seconds=7 * k), k)
        for t in (T1, T7, T30)
        for n in range(6)
        for k in range(1000)
    ]
    await load(settings, rows)
    db.execute("ANALYZE log_entries")
    partition = f"log_entries_p{day:%Y%m%d}"
    params = {"tenant": T1, "lo": day, "hi": day + timedelta(days=1), "batch": 100}
    statement = sql.SQL("EXPLAIN ") + rows_statement(partition)
    plan = "\n".join(r[0] for r in db.execute(statement, params).fetchall())
    # Only the day's partition (and its aliases and index) is named: no other is read.
    assert all(w.startswith(partition) for w in plan.split() if w.startswith("log_entries_p")), plan
    assert f"Tid Scan on {partition}" in plan, plan
    assert f"Index Scan Backward using {partition}_tenant_id_timestamp_idx" in plan, plan
    assert "Seq Scan" not in plan, plan


async def test_two_janitors_at_once_only_one_acts(settings, db) -> None:
    rows = [make_row(T1, days_ago(n) + timedelta(hours=2), n) for n in range(10)]
    await load(settings, rows)
    add_policy(db, T1, 2, archive_path="a")
    before = per_tenant_day(db)

    # Another janitor holds the lock: this one does nothing, records nothing.
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        assert retention_once(settings, NOW, archiver=FakeArchive()) is None
        assert run_once(settings, Rewrites()) is False
    assert per_tenant_day(db) == before
    assert db.execute("SELECT count(*) FROM retention_runs").fetchone() == (0,)

    # Two runs at once: the first holds the lock while it archives; the second finds it.
    inside, release = threading.Event(), threading.Event()
    archive = FakeArchive()

    def slow_archive(*args: Any) -> Any:
        inside.set()
        assert release.wait(30)
        return archive(*args)

    results: list[Any] = []
    first = threading.Thread(
        target=lambda: results.append(retention_once(settings, NOW, archiver=slow_archive))
    )
    first.start()
    assert inside.wait(30)
    second = retention_once(settings, NOW, archiver=FakeArchive())
    release.set()
    first.join(30)
    assert second is None
    assert results[0] is not None and len(results[0].actions) == 7
    assert db.execute("SELECT count(*) FROM retention_runs").fetchone() == (1,)
    assert sorted(d for _, d in per_tenant_day(db)) == [days_ago(n).date() for n in (2, 1, 0)]


async def test_a_stopped_run_says_so_and_the_next_one_finishes(settings, db) -> None:
    rows = [make_row(T1, days_ago(3) + timedelta(seconds=k), k) for k in range(350)]
    rows += [make_row(T1, days_ago(n) + timedelta(hours=1), n) for n in range(3)]
    await load(settings, rows)
    add_policy(db, T1, 1)
    config = replace(settings, retention_delete_batch=100)
    # Asked before the tenant, then before each batch: two batches, then SIGTERM.
    answers = iter([True, True, True])

    record = retention_once(config, NOW, keep_going=lambda: next(answers, False))

    assert record is not None
    assert [e.stage for e in record.errors] == ["run"]
    assert record.deleted_rows == 200
    # Stats count at most the minute the last batch ended in beyond what is left.
    counted, left = db.execute(
        "SELECT (SELECT sum(count) FROM log_counts), (SELECT count(*) FROM log_entries)"
    ).fetchone()
    assert 0 <= counted - left < 60
    assert rollups_disagree(db) == []
    finished = retention_once(config, NOW)
    assert finished is not None and finished.errors == []
    assert sorted(d for _, d in per_tenant_day(db)) == [days_ago(n).date() for n in (1, 0)]
    assert record.deleted_rows + finished.deleted_rows == 351
    assert db.execute("SELECT sum(count) FROM log_counts").fetchone() == (2,)
    assert rollups_disagree(db) == []


async def test_rollup_cells_without_minutes_are_removed_with_their_day(settings, db) -> None:
    rows = [make_row(T1, days_ago(n) + timedelta(hours=2), n) for n in (0, 5, 40)]
    await load(settings, rows)
    add_policy(db, T1, 3)
    # Cells no minute of log_counts explains (a rollup gone wrong), past the cutoff.
    stray = days_ago(4) + timedelta(hours=6)
    db.execute("INSERT INTO log_counts_hourly VALUES (%s, %s, 'api', 3, '', 2, 200)", (T1, stray))
    db.execute(
        "INSERT INTO log_counts_daily VALUES (%s, %s, 'api', 3, '', 2, 200)", (T1, days_ago(4))
    )
    db.execute("INSERT INTO log_counts_by_level VALUES (%s, %s, 3, 2, 200)", (T1, stray))

    record = retention_once(settings, NOW, archiver=FakeArchive())

    assert record is not None and record.errors == []
    assert sorted(d for _, d in per_tenant_day(db)) == [TODAY]
    assert rollups_disagree(db) == []


def test_runs_past_the_last_thousand_are_forgotten(settings, db) -> None:
    db.execute(
        "INSERT INTO retention_runs (started_at, finished_at) "
        "SELECT %s - make_interval(mins => g), %s FROM generate_series(1, 1005) AS g",
        (NOW, NOW),
    )
    record = retention_once(settings, NOW, archiver=FakeArchive())
    assert record is not None
    kept = db.execute("SELECT count(*), max(id) FROM retention_runs").fetchone()
    assert kept == (1000, record.id)
    stored = last_run(db)
    assert msgspec.json.decode(msgspec.json.encode(stored["actions"])) == []
