"""`make bench-retention`: archive and delete one tenant's day, the archive's bytes per log
against the live table's, a day partition's drop, and ingest while the janitor deletes.

The 10M-row benchmark database (bench/load.py, `mlog_bench_<BENCH_ROWS>`, loaded when
absent) is only read: two full days of it (every tenant) are copied into a scratch
database with the same schema, indexes and search index, plus a third, full day's rows
moved a month back for the partition drop. Then, in one run:

1. quiet: the largest tenant's busiest day is archived (services/janitor/archive.py) and
   deleted in RETENTION_DELETE_BATCH batches with its rollup cells
   (services/janitor/removal.py), in a child process as the janitor would; baseline: a
   bare COPY of the same rows out of PostgreSQL, what reading them costs at least;
2. bytes per log: the Parquet file against the live partition (pg_total_relation_size:
   heap, TOAST, indexes, per row) and the whole 10M-row table's;
3. under load: real gateway, writer and janitor processes (bench/ingest.py's pipeline)
   take HTTP batches at full speed; the committed rate is sampled while the same tenant's
   other day is archived and deleted, and alone before and after, in the same run;
4. the scratch partition (a day of rows, every index) is detached concurrently and dropped.

Figures, not asserts. The scratch database, keys and archive are removed afterwards.

    .venv/bin/python -m bench.retention [--rows 200000] [--alone-seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import multiprocessing
import os
import resource
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

from bench.ingest import Variant, _post, make_workload, pipeline
from bench.load import LoadSpec, attach, build_search_indexes, default_rows, index_table, load
from services.janitor.archive import archive_tenant_day
from services.janitor.pacing import Pace
from services.janitor.removal import delete_tenant_day
from shared.migrate import migrate
from shared.settings import Settings
from tests.conftest import drop_keys

ARCHIVE_PATH = "bench"
ROLLUP_TABLES = (
    "log_counts",
    "log_counts_packed",
    "log_counts_by_level",
    "log_counts_hourly",
    "log_counts_daily",
)
_ROLLUP_TIME = {"log_counts_packed": "hour", "log_counts_hourly": "hour", "log_counts_daily": "day"}
TARGET_BYTES_PER_LOG = 100
VICTORIALOGS_BYTES_PER_LOG = 90
TARGET_INGEST_SHARE = 0.80


def _table(day: date) -> str:
    return f"log_entries_p{day:%Y%m%d}"


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@dataclass(frozen=True)
class Choice:
    tenant: uuid.UUID
    quiet_day: date  # archived and deleted alone
    loaded_day: date  # archived and deleted while ingest runs
    quiet_rows: int
    loaded_rows: int


def choose(source: psycopg.Connection) -> Choice:
    """The largest tenant and its two busiest days (full days: the load's first and last
    are partial), from the rollups rather than a scan of 10M rows."""
    rows = source.execute(
        "SELECT tenant_id, (minute AT TIME ZONE 'UTC')::date AS day, sum(count)::bigint "
        "FROM log_count_minutes GROUP BY 1, 2 ORDER BY 3 DESC"
    ).fetchall()
    tenant = rows[0][0]
    days = [(day, n) for t, day, n in rows if t == tenant][:2]
    return Choice(tenant, days[0][0], days[1][0], days[0][1], days[1][1])


def _copy(source: psycopg.Connection, target: psycopg.Connection, out: str, into: str) -> None:
    with (
        source.cursor() as src,
        src.copy(out) as reading,
        target.cursor() as dst,
        dst.copy(into) as writing,
    ):
        for chunk in reading:
            writing.write(chunk)


@contextlib.contextmanager
def scratch_database(admin: Settings, source: Settings, choice: Choice) -> Iterator[Settings]:
    """A migrated database holding the two days of every tenant (rows, rollups, indexes,
    search index) and a third day's rows a month back; dropped afterwards."""
    suffix = uuid.uuid4().hex[:8]
    settings = replace(
        admin, postgres_db=f"mlog_bench_retention_{suffix}", redis_key_prefix=f"bench-{suffix}"
    )
    name = sql.Identifier(settings.postgres_db)
    with psycopg.connect(admin.postgres_conninfo(dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    try:
        migrate(settings)
        _fill(source, settings, choice)
        yield settings
    finally:
        with psycopg.connect(admin.postgres_conninfo(dbname="postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        drop_keys(settings)


def drop_day(choice: Choice) -> date:
    return min(choice.quiet_day, choice.loaded_day) - timedelta(days=30)


def _fill(source_settings: Settings, settings: Settings, choice: Choice) -> None:
    days = [choice.quiet_day, choice.loaded_day]
    started = time.monotonic()
    with (
        psycopg.connect(source_settings.postgres_conninfo(), autocommit=True) as source,
        psycopg.connect(settings.postgres_conninfo(), autocommit=True) as target,
    ):
        for day in [*days, drop_day(choice)]:
            table = sql.Identifier(_table(day))
            if target.execute("SELECT to_regclass(%s)", (_table(day),)).fetchone() != (None,):
                target.execute(sql.SQL("ALTER TABLE log_entries DETACH PARTITION {}").format(table))
                target.execute(sql.SQL("DROP TABLE {}").format(table))
            target.execute(
                sql.SQL(
                    "CREATE TABLE {} (LIKE log_entries INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
                ).format(table)
            )
        for day in days:
            # Bare tables, indexed after: how bench/load.py builds its days, far faster than
            # COPY through every index.
            _copy(
                source,
                target,
                f"COPY {_table(day)} TO STDOUT (FORMAT BINARY)",
                f"COPY {_table(day)} FROM STDIN (FORMAT BINARY)",
            )
            for rollup in ROLLUP_TABLES:
                column = _ROLLUP_TIME.get(rollup, "minute")
                lo, hi = _midnight(day).isoformat(), _midnight(day + timedelta(days=1)).isoformat()
                _copy(
                    source,
                    target,
                    f"COPY (SELECT * FROM {rollup} WHERE {column} >= '{lo}' AND {column} < '{hi}')"
                    " TO STDOUT (FORMAT BINARY)",
                    f"COPY {rollup} FROM STDIN (FORMAT BINARY)",
                )
        # The third day: the quiet day's rows, a month earlier (ids unchanged: nothing
        # looks them up).
        shift = (choice.quiet_day - drop_day(choice)).days
        target.execute(
            sql.SQL(
                'INSERT INTO {} SELECT id, tenant_id, "timestamp" - make_interval(days => {}), '
                "level, service_name, message, trace_id, span_id, user_id, request_id, "
                "metadata, source, host, environment FROM {}"
            ).format(
                sql.Identifier(_table(drop_day(choice))),
                sql.Literal(shift),
                sql.Identifier(_table(choice.quiet_day)),
            )
        )
    all_days = [*days, drop_day(choice)]
    for day in all_days:
        index_table(settings.postgres_conninfo(), _table(day))
    attach(settings, [_midnight(d) for d in all_days])
    # Closed days carry the janitor's search index, as in production; built now so that
    # the pipeline's janitor does not build it during the measurements.
    build_search_indexes(settings, before=_midnight(datetime.now(UTC).date()))
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) log_entries")
        for rollup in ROLLUP_TABLES:
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(rollup)))
    print(f"scratch database ready in {time.monotonic() - started:.0f}s", flush=True)


@dataclass
class JanitorWork:
    rows: int
    archive_bytes: int
    deleted: int
    started: float  # wall clock (time.time()), comparable across processes
    archived: float
    ended: float
    max_rss_mb: float

    @property
    def archive_seconds(self) -> float:
        return self.archived - self.started

    @property
    def delete_seconds(self) -> float:
        return self.ended - self.archived


def archive_and_delete(
    conninfo: str,
    root: str,
    tenant: uuid.UUID,
    day: date,
    batch: int,
    pause_ratio: float,
) -> JanitorWork:
    """What a retention run does to one tenant-day of an archiving tenant, in a process
    of its own (as the janitor is), resting `pause_ratio` times each step's time."""
    pace = Pace(pause_ratio)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        started = time.time()
        result = archive_tenant_day(conn, Path(root), ARCHIVE_PATH, tenant, day, pace)
        archived = time.time()
        deleted = delete_tenant_day(conn, tenant, day, batch, pace=pace)
        ended = time.time()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return JanitorWork(result.rows, result.bytes, deleted.rows, started, archived, ended, rss)


def copy_out_seconds(settings: Settings, tenant: uuid.UUID, day: date) -> float:
    """Seconds of the bare COPY of the tenant-day, sorted, to nowhere."""
    lo, hi = _midnight(day), _midnight(day + timedelta(days=1))
    with psycopg.connect(settings.postgres_conninfo()) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        with cur.copy(
            'COPY (SELECT * FROM log_entries WHERE tenant_id = %s AND "timestamp" >= %s '
            'AND "timestamp" < %s ORDER BY "timestamp", id) TO STDOUT (FORMAT csv)',
            (tenant, lo, hi),
        ) as copy:
            for _ in copy:
                pass
        return time.perf_counter() - started


def live_bytes_per_row(conn: psycopg.Connection, table: str) -> tuple[float, int]:
    row = conn.execute(
        sql.SQL("SELECT pg_total_relation_size(%s), (SELECT count(*) FROM {})").format(
            sql.Identifier(table)
        ),
        (table,),
    ).fetchone()
    assert row is not None
    return row[0] / row[1], row[1]


def whole_table_bytes_per_row(conn: psycopg.Connection) -> float:
    row = conn.execute(
        "SELECT sum(pg_total_relation_size(i.inhrelid)), "
        "(SELECT sum(count) FROM log_count_minutes) FROM pg_inherits i "
        "WHERE i.inhparent = 'log_entries'::regclass"
    ).fetchone()
    assert row is not None
    return float(row[0]) / float(row[1])


@dataclass
class Dropped:
    rows: int
    bytes: int
    detach_seconds: float
    drop_seconds: float


def drop_partition(settings: Settings, table: str) -> Dropped:
    """DETACH … CONCURRENTLY, then DROP: the retention engine's whole-partition path."""
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        bytes_per_row, rows = live_bytes_per_row(conn, table)
        started = time.perf_counter()
        conn.execute(
            sql.SQL("ALTER TABLE log_entries DETACH PARTITION {} CONCURRENTLY").format(
                sql.Identifier(table)
            )
        )
        detached = time.perf_counter()
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
        dropped = time.perf_counter()
    return Dropped(rows, int(bytes_per_row * rows), detached - started, dropped - detached)


async def committed(conn: psycopg.AsyncConnection) -> int:
    cur = await conn.execute("SELECT coalesce(sum(rows), 0) FROM ingest_inbox")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


def rate_between(samples: list[tuple[float, int]], start: float, end: float) -> float:
    """Committed rows per second between two instants, from (time, committed) samples."""
    at_start = next(n for t, n in samples if t >= start)
    after = [(t, n) for t, n in samples if t >= end]
    t_end, at_end = after[0] if after else samples[-1]
    t_start = next(t for t, n in samples if t >= start)
    return (at_end - at_start) / (t_end - t_start)


@dataclass
class UnderLoad:
    work: JanitorWork
    alone: list[float]  # rows/s in the windows before and after
    during_archive: float
    during_delete: float


async def ingest_while_janitor_works(
    settings: Settings,
    choice: Choice,
    root: Path,
    rows: int,
    alone_seconds: float,
    logs: Path,
    pause_ratio: float,
) -> UnderLoad:
    workload = make_workload(rows, seed=7)
    samples: list[tuple[float, int]] = []
    stop = asyncio.Event()
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads
    with (
        pipeline(settings, Variant(1, settings.writer_batch_rows, 1), logs) as running,
        ProcessPoolExecutor(1, mp_context=context) as janitor,
    ):
        # Bodies cycled as long as the run lasts; the gateway gives every entry a new id.
        bodies = itertools.cycle(workload.bodies)

        async def client(http: httpx.AsyncClient) -> None:
            while not stop.is_set():
                tenant, body = next(bodies)
                await _post(http, running.urls[0], tenant, body)

        async def sample(conn: psycopg.AsyncConnection) -> None:
            while not stop.is_set():
                samples.append((time.time(), await committed(conn)))
                await asyncio.sleep(0.25)
            samples.append((time.time(), await committed(conn)))

        # Spawned before the clients start: its interpreter's start-up is not measured.
        await asyncio.wrap_future(janitor.submit(os.getpid))
        conn = await psycopg.AsyncConnection.connect(settings.postgres_conninfo(), autocommit=True)
        async with conn, httpx.AsyncClient(timeout=120) as http:
            tasks = [asyncio.create_task(client(http)) for _ in range(4)]
            sampler = asyncio.create_task(sample(conn))
            await asyncio.sleep(5)  # warm-up: connections, caches, first compaction
            before = (time.time(), time.time() + alone_seconds)
            await asyncio.sleep(alone_seconds)
            work = await asyncio.wrap_future(
                janitor.submit(
                    archive_and_delete,
                    settings.postgres_conninfo(),
                    str(root),
                    choice.tenant,
                    choice.loaded_day,
                    settings.retention_delete_batch,
                    pause_ratio,
                )
            )
            after = (time.time(), time.time() + alone_seconds)
            await asyncio.sleep(alone_seconds)
            stop.set()
            await asyncio.gather(*tasks, sampler)
    return UnderLoad(
        work,
        [rate_between(samples, *before), rate_between(samples, *after)],
        rate_between(samples, work.started, work.archived),
        rate_between(samples, work.archived, work.ended),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000, help="distinct rows in the workload")
    parser.add_argument("--alone-seconds", type=float, default=15.0)
    parser.add_argument("--source-rows", type=int, default=default_rows())
    parser.add_argument(
        "--pause-ratio",
        type=float,
        default=Settings.from_env().retention_pause_ratio,
        help="the janitor's rest per step under load (RETENTION_PAUSE_RATIO)",
    )
    args = parser.parse_args()
    admin = replace(
        Settings.from_env(),
        postgres_user=os.environ.get("BENCH_POSTGRES_USER", "postgres"),
        auth_mode="trusted_header",
        log_level="warning",
        # The pipeline's janitor must not apply retention to the copied days on its own
        # (the third day is a month old): this benchmark does it, and times it.
        log_retention_days=36_500,
    )
    loaded = load(
        LoadSpec(rows=args.source_rows, tenants=10, days=7.0),
        dbname=f"mlog_bench_{args.source_rows}",
        workers=os.cpu_count() or 2,
    )
    with psycopg.connect(loaded.settings.postgres_conninfo()) as source:
        choice = choose(source)
        whole = whole_table_bytes_per_row(source)
    print(
        f"tenant {choice.tenant}: {choice.quiet_day} ({choice.quiet_rows:,} rows) quiet, "
        f"{choice.loaded_day} ({choice.loaded_rows:,} rows) under load",
        flush=True,
    )
    root = Path(tempfile.mkdtemp(prefix="mlog-bench-archive-"))
    logs = Path(tempfile.mkdtemp(prefix="mlog-bench-"))
    context = multiprocessing.get_context("spawn")
    try:
        with scratch_database(admin, loaded.settings, choice) as settings:
            with psycopg.connect(settings.postgres_conninfo()) as conn:
                live, _ = live_bytes_per_row(conn, _table(choice.quiet_day))
            copy_rate = choice.quiet_rows / copy_out_seconds(
                settings, choice.tenant, choice.quiet_day
            )
            with ProcessPoolExecutor(1, mp_context=context) as janitor:
                quiet = janitor.submit(
                    archive_and_delete,
                    settings.postgres_conninfo(),
                    str(root),
                    choice.tenant,
                    choice.quiet_day,
                    settings.retention_delete_batch,
                    0.0,
                ).result()
            print(f"quiet archive and delete done ({quiet.rows:,} rows)", flush=True)
            loaded_run = asyncio.run(
                ingest_while_janitor_works(
                    settings, choice, root, args.rows, args.alone_seconds, logs, args.pause_ratio
                )
            )
            dropped = drop_partition(settings, _table(drop_day(choice)))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    report(choice, quiet, loaded_run, dropped, copy_rate, live, whole, settings, args.pause_ratio)
    print(f"(service logs in {logs})")


def report(
    choice: Choice,
    quiet: JanitorWork,
    under: UnderLoad,
    dropped: Dropped,
    copy_rate: float,
    live: float,
    whole: float,
    settings: Settings,
    pause_ratio: float,
) -> None:
    per_log = quiet.archive_bytes / quiet.rows
    alone = statistics.fmean(under.alone)
    work = under.work
    print(f"\nlargest tenant's day: {quiet.rows:,} rows ({choice.tenant}, {choice.quiet_day})")
    print("| figure | measured | baseline |")
    print("| --- | --- | --- |")
    print(
        f"| archive (read, Parquet, fsync) | {quiet.archive_seconds:.1f} s, "
        f"{quiet.rows / quiet.archive_seconds:,.0f} rows/s, peak RSS {quiet.max_rss_mb:.0f} MB "
        f"| bare sorted COPY out of the same rows: {copy_rate:,.0f} rows/s |"
    )
    print(
        f"| delete (batches of {settings.retention_delete_batch:,}, with rollup cells) "
        f"| {quiet.delete_seconds:.1f} s, {quiet.deleted / quiet.delete_seconds:,.0f} rows/s "
        f"| partition drop below |"
    )
    print(
        f"| archive size | {quiet.archive_bytes / 1e6:.1f} MB, {per_log:.1f} B/log "
        f"| target <= {TARGET_BYTES_PER_LOG}; VictoriaLogs {VICTORIALOGS_BYTES_PER_LOG}; "
        f"live partition {live:.0f} B/log ({live / per_log:.1f}x), "
        f"whole 10M table {whole:.0f} B/log |"
    )
    print(
        f"| partition drop ({dropped.rows:,} rows, {dropped.bytes / 1e6:.0f} MB) "
        f"| detach concurrently {dropped.detach_seconds:.2f} s + drop "
        f"{dropped.drop_seconds:.2f} s | deleting as many rows at the rate above: "
        f"{dropped.rows / (quiet.deleted / quiet.delete_seconds):.0f} s |"
    )
    print(
        f"| ingest while archiving ({work.archive_seconds:.1f} s, {work.rows:,} rows) "
        f"| {under.during_archive:,.0f} rows/s ({under.during_archive / alone:.0%}) "
        f"| alone, same run: {alone:,.0f} rows/s "
        f"({' and '.join(f'{r:,.0f}' for r in under.alone)}) |"
    )
    print(
        f"| ingest while deleting ({work.delete_seconds:.1f} s, {work.deleted:,} rows) "
        f"| {under.during_delete:,.0f} rows/s ({under.during_delete / alone:.0%}) "
        f"| alone: {alone:,.0f} rows/s; target >= {TARGET_INGEST_SHARE:.0%} |"
    )
    print(
        f"| janitor under load (RETENTION_PAUSE_RATIO {pause_ratio}; quiet: 0) "
        f"| archive {work.rows / work.archive_seconds:,.0f} rows/s, "
        f"delete {work.deleted / work.delete_seconds:,.0f} rows/s | quiet: as above |"
    )


if __name__ == "__main__":
    main()
