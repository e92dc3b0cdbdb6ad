"""Load N realistic rows into a dedicated database for the query benchmark, fast, once.

    .venv/bin/python -m bench.load                 # 10M rows (BENCH_ROWS overrides)
    BENCH_ROWS=1000000 .venv/bin/python -m bench.load
    .venv/bin/python -m bench.load --fresh         # drop and load again

Rows come from ../shared/bench/gen_logs.py (10 tenants, 7 days ending at load time). Not
through HTTP: several processes each generate a slice of the time range and binary-COPY
it into bare day tables (no index), then the tables get the parent's indexes built in
one go (sorted builds, far cheaper than maintaining them row by row), are attached as
partitions of log_entries, and get the search index the janitor would build on closed
days. log_counts and the coarser rollups are written by the same statement the writer
runs. A database that already holds the same load is reused
(pending migrations are applied to it).
"""

from __future__ import annotations

import argparse
import os
import random
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import msgspec
import psycopg
from psycopg import sql
from psycopg.types.json import set_json_dumps

from services.janitor.closed_partitions import parent_index_ddl, settle_closed_partition
from services.janitor.count_packing import pack_closed_minutes
from services.janitor.open_day_search import index_open_day
from services.janitor.word_counts import count_words
from services.writer.store import _ROLLUP_SQL, COPY_TYPES, RollupCells
from shared.compaction import compact
from shared.migrate import migrate
from shared.model import Level, StoredRow
from shared.settings import Settings
from tests.datagen import load_gen_logs

# The writer's column order (services/writer/store.py, COPY_SQL): a row, then its tenant.
COLUMNS = sql.SQL(
    'id, "timestamp", level, service_name, message, trace_id, span_id, user_id, '
    "request_id, metadata, source, host, environment, tenant_id"
)
DEFAULT_ROWS = 10_000_000
SEED = 42
_LEVELS = {level.name: int(level) for level in Level}


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What is loaded; a database holding the same spec is reused."""

    rows: int
    tenants: int
    days: float
    seed: int = SEED


@dataclass(frozen=True, slots=True)
class Loaded:
    """A loaded database: its settings, the spec, and the instant the data ends."""

    settings: Settings
    spec: LoadSpec
    end: datetime
    load_seconds: float
    tenants: list[uuid.UUID]


def bench_settings(dbname: str) -> Settings:
    """The environment's settings (POSTGRES_*), as the superuser by default, on `dbname`."""
    base = Settings.from_env()
    return replace(
        base,
        postgres_user=os.environ.get("BENCH_POSTGRES_USER", "postgres"),
        postgres_db=dbname,
    )


def tenant_ids(seed: int, tenants: int) -> list[uuid.UUID]:
    """The tenants gen_logs.generate() draws first from its seeded generator."""
    rng = random.Random(seed)
    return [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(tenants)]


def _admin(settings: Settings) -> psycopg.Connection:
    return psycopg.connect(settings.postgres_conninfo(dbname="postgres"), autocommit=True)


def existing_load(settings: Settings, spec: LoadSpec) -> Loaded | None:
    """The load already in the database when it matches `spec` and is complete."""
    with _admin(settings) as admin:
        found = admin.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (settings.postgres_db,)
        ).fetchone()
    if not found:
        return None
    with psycopg.connect(settings.postgres_conninfo()) as conn:
        if conn.execute("SELECT to_regclass('bench_meta')").fetchone() == (None,):
            return None
        row = conn.execute(
            "SELECT rows, tenants, days, seed, end_ts, load_seconds, tenant_ids, complete "
            "FROM bench_meta"
        ).fetchone()
    if row is None or not row[7] or LoadSpec(row[0], row[1], row[2], row[3]) != spec:
        return None
    return Loaded(settings, spec, row[4], row[5], list(row[6]))


def _day(ts: datetime) -> datetime:
    return ts.replace(hour=0, minute=0, second=0, microsecond=0)


def _table(day: datetime) -> str:
    # The name ensure_log_partition() gives the day's partition.
    return f"log_entries_p{day:%Y%m%d}"


def _days(start: datetime, end: datetime) -> list[datetime]:
    days, day = [], _day(start)
    while day <= end:
        days.append(day)
        day += timedelta(days=1)
    return days


def create_database(settings: Settings, spec: LoadSpec, end: datetime) -> list[datetime]:
    """A fresh, migrated database with one bare (unattached, unindexed) table per day."""
    with _admin(settings) as admin:
        name = sql.Identifier(settings.postgres_db)
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(name))
    migrate(settings)
    days = _days(end - timedelta(days=spec.days), end)
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE bench_meta (rows bigint, tenants int, days float8, seed int, "
            "end_ts timestamptz, load_seconds float8, tenant_ids uuid[], complete boolean)"
        )
        for day in days:
            table = sql.Identifier(_table(day))
            if conn.execute("SELECT to_regclass(%s)", (_table(day),)).fetchone() != (None,):
                # Made (empty) by the migration's partitions-ahead: replaced by a bare table.
                conn.execute(sql.SQL("ALTER TABLE log_entries DETACH PARTITION {}").format(table))
                conn.execute(sql.SQL("DROP TABLE {}").format(table))
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {} (LIKE log_entries INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
                ).format(table)
            )
    return days


@dataclass(frozen=True, slots=True)
class Slice:
    """One worker's share: `rows` rows of the seeded stream ending at `end`."""

    conninfo: str
    rows: int
    seed: int
    days: float
    tenants: int
    end: datetime
    canonical: tuple[uuid.UUID, ...]


def _uuid7(rng: random.Random, ts: datetime) -> uuid.UUID:
    # Time-ordered like the gateway's ids, stamped with the entry's own time.
    ms = int(ts.timestamp() * 1000)
    value = (
        (ms << 80) | (0x7 << 76) | (rng.getrandbits(12) << 64) | (0b10 << 62) | rng.getrandbits(62)
    )
    return uuid.UUID(int=value)


def _records(part: Slice) -> Iterator[tuple[uuid.UUID, StoredRow]]:
    gen = load_gen_logs()
    own = {str(t): part.canonical[i] for i, t in enumerate(tenant_ids(part.seed, part.tenants))}
    rng = random.Random(part.seed ^ 0x5EED)
    encode = msgspec.json.encode
    for e in gen.generate(part.rows, part.seed, part.days, part.tenants, part.end):
        ts = datetime.fromisoformat(e["timestamp"])
        yield (
            own[e["tenant_id"]],
            (
                _uuid7(rng, ts).bytes,
                ts,
                _LEVELS[e["level"]],
                e["service_name"],
                e["message"],
                e["trace_id"],
                e["span_id"],
                e["user_id"],
                e["request_id"],
                encode(e["metadata"]),
                e["source"],
                e["host"],
                e["environment"],
            ),
        )


def _json_passthrough(obj: object) -> bytes:
    return obj if isinstance(obj, bytes) else msgspec.json.encode(obj)


def load_slice(part: Slice) -> int:
    """Generate one slice, COPY it day table by day table, then add its rollups."""
    cells = RollupCells()
    written = 0
    with psycopg.connect(part.conninfo, autocommit=True) as conn:
        set_json_dumps(_json_passthrough, context=conn)
        records = _records(part)
        pending = next(records, None)
        while pending is not None:
            day = _day(pending[1][1])
            stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                sql.Identifier(_table(day)), COLUMNS
            )
            with conn.cursor() as cur, cur.copy(stmt) as copy:
                copy.set_types(COPY_TYPES)
                while pending is not None and _day(pending[1][1]) == day:
                    tenant, row = pending
                    copy.write_row((*row, tenant.bytes))
                    cells.add(tenant, (row,))
                    written += 1
                    pending = next(records, None)
        with conn.transaction():
            conn.execute(_ROLLUP_SQL, cells.parameters())
    return written


def _slices(settings: Settings, spec: LoadSpec, end: datetime, workers: int) -> list[Slice]:
    canonical = tuple(tenant_ids(spec.seed, spec.tenants))
    span = timedelta(days=spec.days) / workers
    base, extra = divmod(spec.rows, workers)
    return [
        Slice(
            conninfo=settings.postgres_conninfo(),
            rows=base + (1 if i < extra else 0),
            seed=spec.seed + i,
            days=spec.days / workers,
            tenants=spec.tenants,
            # Worker 0 ends at `end`, the others just before the previous one's start.
            end=end - span * i,
            canonical=canonical,
        )
        for i in range(workers)
    ]


def index_table(conninfo: str, table: str) -> str:
    """Build the parent's indexes on one bare day table (sorted builds, no WAL churn)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '256MB'")
        for statement in parent_index_ddl(conn, table):
            conn.execute(statement)
    return table


def attach(settings: Settings, days: list[datetime]) -> None:
    """Attach every day table: the CHECK constraint spares PostgreSQL a validating scan,
    and the matching indexes built above are adopted instead of built again."""
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        for day in days:
            table = sql.Identifier(_table(day))
            lo, hi = day, day + timedelta(days=1)
            with conn.transaction():
                conn.execute(
                    sql.SQL(
                        'ALTER TABLE {} ADD CONSTRAINT bench_range CHECK ("timestamp" >= {} '
                        'AND "timestamp" < {})'
                    ).format(table, sql.Literal(lo), sql.Literal(hi))
                )
                conn.execute(
                    sql.SQL("ALTER TABLE log_entries ATTACH PARTITION {} FOR VALUES FROM ({}) "
                            "TO ({})").format(table, sql.Literal(lo), sql.Literal(hi))
                )  # fmt: skip
                conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT bench_range").format(table))


def build_search_indexes(settings: Settings, before: datetime) -> int:
    """What the janitor does for closed days: each rewritten in tenant order, with its
    search index (services/janitor/closed_partitions.py); and for today's past hours
    (services/janitor/open_day_search.py)."""
    built = 0
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        while settle_closed_partition(conn, before=before) is not None:
            built += 1
        index_open_day(conn)
    return built


def count_past_words(settings: Settings) -> int:
    """What the janitor does next: the words of closed days and of today's past hours
    counted per tenant (services/janitor/word_counts.py). After compaction: it
    counts spans whose rollups are compacted."""
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        return count_words(conn, seconds=float("inf"))


def pack_minutes(settings: Settings) -> int:
    """What the janitor does for closed days' minute cells: packed per hour
    (services/janitor/count_packing.py); returns the cells moved. After compaction, like
    the janitor. In production the space they leave in log_counts holds the next days'
    cells; a load writes every day at once, so the table is rewritten to the size it
    keeps: the days not packed yet."""
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        moved = pack_closed_minutes(conn)
        if moved:
            conn.execute("VACUUM (FULL, ANALYZE) log_counts")
            conn.execute("VACUUM (ANALYZE) log_counts_packed")
    return moved


_WRITTEN_TABLES = (
    "log_entries",
    "log_counts",
    "log_counts_by_level",
    "log_counts_hourly",
    "log_counts_daily",
    "log_word_spans",
    "log_word_counts",
)


def _say(message: str, started: float) -> None:
    print(f"[{time.monotonic() - started:7.1f}s] {message}", flush=True)


def load(spec: LoadSpec, *, dbname: str, workers: int, fresh: bool = False) -> Loaded:
    """The loaded database for `spec`, loading it unless an identical load exists."""
    settings = bench_settings(dbname)
    if not fresh:
        found = existing_load(settings, spec)
        if found is not None:
            applied = migrate(settings)
            if applied:
                print(f"applied migrations {applied} to the existing load", flush=True)
            # Closed days a later version settles differently are settled as the janitor would.
            build_search_indexes(settings, before=_day(datetime.now(UTC)))
            count_past_words(settings)
            pack_minutes(settings)
            return found
    started = time.monotonic()
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    days = create_database(settings, spec, end)
    _say(f"database {dbname}: {len(days)} day tables, {workers} workers", started)
    with ProcessPoolExecutor(workers) as pool:
        written = sum(pool.map(load_slice, _slices(settings, spec, end, workers)))
        _say(f"copied {written:,} rows ({written / (time.monotonic() - started):,.0f}/s)", started)
        conninfo = settings.postgres_conninfo()
        for table in pool.map(index_table, [conninfo] * len(days), [_table(d) for d in days]):
            _say(f"indexed {table}", started)
    attach(settings, days)
    _say("attached", started)
    built = build_search_indexes(settings, before=_day(datetime.now(UTC)))
    _say(f"{built} closed day(s) rewritten in tenant order, with the search index", started)
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        # The rollup watermark where a running janitor keeps it (shared/compaction.py).
        compact(conn)
    spans = count_past_words(settings)
    _say(f"words counted in {spans} span(s) of a tenant's past hours", started)
    _say(f"{pack_minutes(settings):,} minute cells of closed days packed", started)
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        # Visibility map set (index-only scans) and statistics current, as after autovacuum
        # (which this machine's PostgreSQL runs without: `autovacuum = off`). Every table
        # written: log_counts_by_level left without statistics was planned as 20 rows
        # where a day of the busiest tenant holds 6,273.
        for table in _WRITTEN_TABLES:
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))
        seconds = time.monotonic() - started
        tenants = tenant_ids(spec.seed, spec.tenants)
        conn.execute(
            "INSERT INTO bench_meta VALUES (%s, %s, %s, %s, %s, %s, %s, true)",
            (spec.rows, spec.tenants, spec.days, spec.seed, end, seconds, tenants),
        )
    _say(f"loaded {spec.rows:,} rows in {seconds:.0f}s", started)
    return Loaded(settings, spec, end, seconds, tenants)


def default_rows() -> int:
    return int(os.environ.get("BENCH_ROWS", DEFAULT_ROWS))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=default_rows(), help="default: BENCH_ROWS")
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--db", default="", help="database name (default: mlog_bench_<rows>)")
    parser.add_argument("--fresh", action="store_true", help="load again even if loaded")


def from_arguments(args: argparse.Namespace) -> Loaded:
    spec = LoadSpec(rows=args.rows, tenants=args.tenants, days=args.days)
    return load(spec, dbname=args.db or f"mlog_bench_{args.rows}", workers=args.workers,
                fresh=args.fresh)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    loaded = from_arguments(parser.parse_args())
    print(f"{loaded.settings.postgres_db}: {loaded.spec.rows:,} rows ending {loaded.end:%F %R}Z "
          f"(loaded in {loaded.load_seconds:.0f}s)")  # fmt: skip


if __name__ == "__main__":
    main()
