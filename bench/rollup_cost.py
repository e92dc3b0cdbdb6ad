"""What the coarser rollups (sql/0005_rollups.sql) cost the writer.

    .venv/bin/python -m bench.rollup_cost [--rows 200000] [--batch 5000] [--rounds 3]

Stores realistic rows (../shared/bench/gen_logs.py, at the density of the 10M-row
query benchmark) the way the writer does, one transaction per batch: binary COPY into
log_entries, then the log_counts upsert. Timed with the triggers that maintain
log_counts_hourly, log_counts_daily and log_counts_by_level enabled and disabled, in
alternating rounds on a scratch database (dropped afterwards). Figures, not asserts.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import set_json_dumps

from bench.load import SEED, Slice, _json_passthrough, _records, bench_settings, tenant_ids
from services.writer.store import (
    _ROLLUP_SQL,
    COPY_SQL,
    COPY_TYPES,
    record_bytes,
    rollup_parameters,
)
from shared.migrate import migrate
from shared.model import LogRecord

TRIGGERS = ("log_counts_rollups_insert", "log_counts_rollups_update", "log_counts_rollups_delete")
# Rows per day in the query benchmark (10M rows over 7 days).
DENSITY = 10_000_000 / 7


def store(conn: psycopg.Connection, batch: list[tuple[uuid.UUID, LogRecord]]) -> None:
    """One writer transaction: COPY the rows, add their counts to log_counts."""
    counts: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0])
    with conn.transaction():
        with conn.cursor() as cur, cur.copy(COPY_SQL) as copy:
            copy.set_types(COPY_TYPES)
            for tenant, r in batch:
                copy.write_row(
                    (r.id, tenant, r.timestamp, r.level, r.service_name, r.message, r.trace_id,
                     r.span_id, r.user_id, r.request_id, r.metadata, r.source, r.host,
                     r.environment)
                )  # fmt: skip
                minute = r.timestamp.replace(second=0, microsecond=0)
                key = (tenant, minute, r.service_name, r.level, r.environment or "")
                counts[key][0] += 1
                counts[key][1] += record_bytes(r)
        conn.execute(_ROLLUP_SQL, rollup_parameters(counts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    settings = bench_settings("mlog_bench_rollup_cost")
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    part = Slice(
        conninfo="",
        rows=args.rows,
        seed=SEED,
        days=args.rows / DENSITY,
        tenants=10,
        end=end,
        canonical=tuple(tenant_ids(SEED, 10)),
    )
    rows = list(_records(part))
    batches = [rows[i : i + args.batch] for i in range(0, len(rows), args.batch)]
    with psycopg.connect(settings.postgres_conninfo(dbname="postgres"), autocommit=True) as admin:
        name = sql.Identifier(settings.postgres_db)
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(name))
    try:
        migrate(settings)
        timings: dict[bool, list[float]] = {True: [], False: []}
        with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
            set_json_dumps(_json_passthrough, context=conn)
            conn.execute(
                "SELECT ensure_log_partition(d) FROM generate_series(%s::timestamptz, %s, "
                "interval '1 day') AS d",
                (end - timedelta(days=part.days + 1), end + timedelta(days=1)),
            )
            for _ in range(args.rounds):
                for enabled in (True, False):
                    action = "ENABLE" if enabled else "DISABLE"
                    for trigger in TRIGGERS:
                        conn.execute(f"ALTER TABLE log_counts {action} TRIGGER {trigger}")
                    conn.execute(
                        "TRUNCATE log_entries, log_counts, log_counts_hourly, log_counts_daily, "
                        "log_counts_by_level"
                    )
                    started = time.perf_counter()
                    for batch in batches:
                        store(conn, batch)
                    timings[enabled].append(len(rows) / (time.perf_counter() - started))
        on, off = statistics.median(timings[True]), statistics.median(timings[False])
        print(f"{len(rows):,} rows in batches of {args.batch}, {args.rounds} rounds, median:")
        print(f"  log_counts only:               {off:9,.0f} rows/s")
        print(f"  + hourly, daily, by-level:     {on:9,.0f} rows/s  ({on / off - 1:+.1%})")
    finally:
        with psycopg.connect(
            settings.postgres_conninfo(dbname="postgres"), autocommit=True
        ) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(settings.postgres_db)
                )
            )


if __name__ == "__main__":
    main()
