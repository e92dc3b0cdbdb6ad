"""What each candidate index costs at write time and buys at read time (issue 3).

Loads N realistic rows (../shared/bench/gen_logs.py: 7 days, 10 tenants, daily
partitions) by COPY into a scratch database per variant, then times the search and
lookup query shapes the query API runs. Figures, not asserts; the numbers in the README
("Search", "Indexes") come from this script:

    .venv/bin/python -m bench.search_indexes --rows 1000000

Each variant gets its own database (mlog_q3_bench_<variant>), dropped afterwards.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from services.gateway.ingest.ids import uuid7
from services.janitor.closed_partitions import settle_closed_partition
from shared.model import Level
from tests.datagen import load_gen_logs

CORE_SQL = Path(__file__).resolve().parent.parent / "sql" / "0001_core.sql"
COLUMNS = (
    'id, tenant_id, "timestamp", level, service_name, message, trace_id, span_id, user_id, '
    "request_id, metadata, source, host, environment"
)
LEAN_INDEXES = (
    "log_entries_tenant_time",
    "log_entries_tenant_service_time",
    "log_entries_trace",
    "log_entries_request",
)
COLS = (
    'id, tenant_id, "timestamp", level, service_name, message, trace_id, span_id, user_id, '
    "request_id, metadata, source, host, environment"
)


@dataclass
class Variant:
    name: str
    ddl: list[str] = field(default_factory=list)
    drop_lean: bool = False


VARIANTS = {
    "none": Variant("none", drop_lean=True),
    "lean": Variant("lean"),
    "trgm": Variant(
        "trgm",
        [
            "CREATE EXTENSION IF NOT EXISTS pg_trgm",
            "CREATE INDEX log_entries_message_trgm ON log_entries USING gin "
            '((message COLLATE "C") gin_trgm_ops)',
        ],
    ),
    "tsvector": Variant(
        "tsvector",
        [
            "CREATE INDEX log_entries_message_tsv ON log_entries USING gin "
            "(to_tsvector('simple', message))"
        ],
    ),
    "id": Variant("id", ["CREATE INDEX log_entries_id ON log_entries (id)"]),
    "user": Variant(
        "user",
        ["CREATE INDEX log_entries_user ON log_entries (user_id) WHERE user_id IS NOT NULL"],
    ),
}


def _copy_text(value: Any) -> str:
    if value is None:
        return "\\N"
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def write_rows(path: Path, rows: int, end: datetime) -> tuple[str, str]:
    """The COPY text file; returns (largest tenant, a rare word: one user's id)."""
    import json

    gen = load_gen_logs()
    tenants: Counter[str] = Counter()
    users: Counter[str] = Counter()
    with path.open("w") as out:
        for e in gen.generate(rows, seed=42, days=7, tenants=10, end=end):
            ts = datetime.fromisoformat(e["timestamp"])
            tenants[e["tenant_id"]] += 1
            if e["message"].startswith("Failed to authenticate user"):
                users[e["message"].rsplit(" ", 1)[1]] += 1
            values = (
                uuid7(int(ts.timestamp() * 1e9)),
                e["tenant_id"],
                ts.isoformat(),
                int(Level[e["level"]]),
                e["service_name"],
                e["message"],
                e["trace_id"],
                e["span_id"],
                e["user_id"],
                e["request_id"],
                json.dumps(e["metadata"]),
                e["source"],
                e["host"],
                e["environment"],
            )
            out.write("\t".join(_copy_text(v) for v in values) + "\n")
    return tenants.most_common(1)[0][0], users.most_common()[-1][0]


def admin_conninfo(dbname: str) -> str:
    return f"host=127.0.0.1 port=5432 user=postgres dbname={dbname}"


def create_database(name: str, variant: Variant, end: datetime) -> None:
    with psycopg.connect(admin_conninfo("postgres"), autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(admin_conninfo(name), autocommit=True) as conn:
        conn.execute(CORE_SQL.read_text().encode())
        conn.execute("INSERT INTO log_settings VALUES ('partition_interval', 'day')")
        for day in range(9):
            conn.execute("SELECT ensure_log_partition(%s)", (end - timedelta(days=8 - day),))
        if variant.drop_lean:
            for index in LEAN_INDEXES:
                conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(index)))
        for ddl in variant.ddl:
            conn.execute(ddl.encode())


def drop_database(name: str) -> None:
    with psycopg.connect(admin_conninfo("postgres"), autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def copy_file(conn: psycopg.Connection, path: Path) -> float:
    started = time.perf_counter()
    copy_sql = f"COPY log_entries ({COLUMNS}) FROM STDIN"
    with conn.cursor() as cur, cur.copy(copy_sql) as copy, path.open("rb") as f:
        while chunk := f.read(1 << 20):
            copy.write(chunk)
    return time.perf_counter() - started


def table_bytes(conn: psycopg.Connection) -> tuple[int, int]:
    row = conn.execute(
        """SELECT sum(pg_table_size(c.oid)), sum(pg_indexes_size(c.oid))
           FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = 'log_entries'::regclass"""
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def timed(conn: psycopg.Connection, query: str, params: tuple[Any, ...], runs: int) -> float:
    times = []
    for i in range(runs + 1):
        started = time.perf_counter()
        conn.execute(query.encode(), params, prepare=False).fetchall()
        if i:  # the first run warms the cache
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def plan_of(conn: psycopg.Connection, query: str, params: tuple[Any, ...]) -> str:
    """The indexes the plan reads (partition prefixes stripped), or the scan kind."""
    rows = conn.execute(("EXPLAIN " + query).encode(), params, prepare=False).fetchall()
    text = "\n".join(r[0] for r in rows)
    used = Counter(
        re.sub(r"^log_entries_p\d+_", "", name)
        for name in re.findall(r"Scan(?: Backward)? (?:using|on) (\S+)", text)
        if not name.startswith("log_entries_p") or "_" in name[13:]
    )
    used.update("seq" for _ in re.findall(r"Seq Scan", text))
    return ",".join(f"{name}x{n}" for name, n in sorted(used.items()))


def like(term: str) -> str:
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def search_queries(tsv: bool) -> dict[str, tuple[str, Callable[[str], tuple[Any, ...]]]]:
    """Shape name → (SQL, params from the term); the term is bound twice for tsvector."""
    match = 'message COLLATE "C" ILIKE %s'
    if tsv:
        match = "to_tsvector('simple', message) @@ phraseto_tsquery('simple', %s) AND " + match

    def params(tenant: str, since: timedelta) -> Callable[[str], tuple[Any, ...]]:
        def make(term: str) -> tuple[Any, ...]:
            head: tuple[Any, ...] = (tenant, datetime.now(UTC) - since)
            return (*head, term, like(term)) if tsv else (*head, like(term))

        return make

    base = f'FROM log_entries WHERE tenant_id = %s AND "timestamp" >= %s AND {match}'
    latest = f'SELECT {COLS} {base} ORDER BY "timestamp" DESC, id DESC LIMIT 101'
    return {
        "latest100_24h": (latest, params("", timedelta(hours=24))),
        "count_capped_24h": (
            f"SELECT count(*) FROM (SELECT 1 {base} LIMIT 10001) s",
            params("", timedelta(hours=24)),
        ),
        "count_7d": (f"SELECT count(*) {base}", params("", timedelta(days=7))),
    }


def run_reads(
    conn: psycopg.Connection, tenant: str, rare: str, tsv: bool, runs: int
) -> dict[str, tuple[float, str]]:
    results: dict[str, tuple[float, str]] = {}
    terms = {"word": "timeout", "rare": rare, "phrase": "connection refused"}
    for shape, (query, make) in search_queries(tsv).items():
        for label, term in terms.items():
            if shape == "count_7d" and label == "rare":
                continue
            params = make(term)
            params = (tenant, *params[1:])
            results[f"{shape}[{label}]"] = (
                timed(conn, query, params, runs),
                plan_of(conn, query, params),
            )
    return results


def run_lookups(conn: psycopg.Connection, tenant: str, runs: int) -> dict[str, tuple[float, str]]:
    row = conn.execute(
        "SELECT id, trace_id, request_id, user_id FROM log_entries WHERE tenant_id = %s "
        "ORDER BY random() LIMIT 1",
        (tenant,),
    ).fetchone()
    assert row is not None
    entry_id, trace, request, user = row
    day = datetime.now(UTC) - timedelta(hours=24)
    shapes: dict[str, tuple[str, tuple[Any, ...]]] = {
        "by_id": (
            f"SELECT {COLS} FROM log_entries WHERE tenant_id = %s AND id = %s",
            (tenant, entry_id),
        ),
        "trace": (
            f"SELECT {COLS} FROM log_entries WHERE tenant_id = %s AND trace_id = %s "
            'ORDER BY "timestamp", id LIMIT 1001',
            (tenant, trace),
        ),
        "request": (
            f"SELECT {COLS} FROM log_entries WHERE tenant_id = %s AND request_id = %s "
            'ORDER BY "timestamp", id LIMIT 1001',
            (tenant, request),
        ),
        "user_24h": (
            f'SELECT {COLS} FROM log_entries WHERE tenant_id = %s AND "timestamp" >= %s '
            'AND user_id = %s ORDER BY "timestamp" DESC, id DESC LIMIT 101',
            (tenant, day, user),
        ),
        "latest100": (
            f'SELECT {COLS} FROM log_entries WHERE tenant_id = %s AND "timestamp" >= %s '
            'ORDER BY "timestamp" DESC, id DESC LIMIT 101',
            (tenant, day),
        ),
    }
    return {name: (timed(conn, q, p, runs), plan_of(conn, q, p)) for name, (q, p) in shapes.items()}


def report(title: str, figures: dict[str, tuple[float, str]]) -> None:
    print(f"  {title}")
    for name, (ms, plan) in figures.items():
        print(f"    {name:32s} {ms:9.1f} ms  via {plan}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5, help="timed runs per query (median)")
    ap.add_argument("--variants", default="none,lean,trgm,tsvector,id,user")
    ap.add_argument("--rounds", type=int, default=1, help="load every variant this many times")
    ap.add_argument("--no-reads", action="store_true", help="measure the write cost only")
    args = ap.parse_args()
    end = datetime.now(UTC).replace(microsecond=0)
    with tempfile.TemporaryDirectory(prefix="mlog_q3_") as tmp:
        data = Path(tmp) / "rows.tsv"
        started = time.perf_counter()
        tenant, rare = write_rows(data, args.rows, end)
        print(
            f"generated {args.rows} rows in {time.perf_counter() - started:.0f} s; "
            f"tenant {tenant}, rare word {rare}"
        )
        for name in args.variants.split(",") * args.rounds:
            variant = VARIANTS[name]
            dbname = f"mlog_q3_bench_{name}"
            create_database(dbname, variant, end)
            try:
                with psycopg.connect(admin_conninfo(dbname), autocommit=True) as conn:
                    seconds = copy_file(conn, data)
                    heap, index = table_bytes(conn)
                    print(
                        f"[{name}] COPY {args.rows / seconds:,.0f} rows/s; "
                        f"{(heap + index) / args.rows:.0f} B/row "
                        f"(table {heap / args.rows:.0f}, indexes {index / args.rows:.0f})"
                    )
                    if args.no_reads:
                        continue
                    conn.execute("VACUUM ANALYZE log_entries")
                    if name in ("lean", "trgm", "tsvector"):
                        report(
                            "search", run_reads(conn, tenant, rare, name == "tsvector", args.runs)
                        )
                    if name in ("lean", "id", "user"):
                        report("lookups", run_lookups(conn, tenant, args.runs))
                    if name == "lean":
                        built = build_closed(conn, end)
                        print(f"  trgm on closed partitions: {built}")
                        report(
                            "search, closed partitions indexed",
                            run_reads(conn, tenant, rare, False, args.runs),
                        )
            finally:
                drop_database(dbname)


def build_closed(conn: psycopg.Connection, end: datetime) -> str:
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    conn.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
    started = time.perf_counter()
    count = 0
    while settle_closed_partition(conn, before=end.replace(hour=0, minute=0, second=0)):
        count += 1
    seconds = time.perf_counter() - started
    return f"{count} partitions in {seconds:.1f} s ({seconds / max(count, 1):.1f} s each)"


if __name__ == "__main__":
    main()
