"""Today's past hours indexed for search, a bound at a time (shared/open_day_search.py).

Each janitor run makes sure the day partition holding the current bound has a valid
index `<partition>_search_to_HH`: the tenant and the trigrams of `message`, as a closed
day's search index, `WHERE "timestamp" < bound`. It is built CONCURRENTLY (writers and
readers go on; the writers' rows, dated after the bound, never enter it), then the
partition's older ones are dropped, also concurrently: the newest serves every split
at or before its bound. A build cut short (SIGTERM cancels it, services/janitor/
__main__.py; or given up, below) leaves an invalid index, dropped by the next run before
it builds again.
When the day closes, the rewrite in tenant order replaces the partition and its
indexes with it (services/janitor/closed_partitions.py).

Only day partitions get one: with PARTITION_INTERVAL=month each build would read and
index up to a month of rows, every three hours.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from services.janitor.closed_partitions import PARTITION_BOUNDS_SQL, search_index_ddl
from shared.open_day_search import INDEX_INFIX, bound_to_build, index_name

log = logging.getLogger("janitor")

# A concurrent build waits, at its end, for every transaction of the database older than
# itself (a writer's: milliseconds; a long export's: as long as it runs), and a drop for
# those on the table. The janitor's other work waits behind it: so a build is not begun
# while a transaction has run for OLD_TRANSACTION_SECONDS, and a wait is given up after
# WAIT_SECONDS (a build then leaves an invalid index); the next run tries again.
OLD_TRANSACTION_SECONDS = 10
WAIT_SECONDS = 60

_OLD_TRANSACTION_SQL = """
SELECT pid, now() - xact_start FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND backend_type = 'client backend'  -- a build does not wait for (auto)vacuum
  AND xact_start < now() - make_interval(secs => %s)
ORDER BY xact_start LIMIT 1
"""

# The partition of log_entries whose bounds are exactly [day, day + 1 day).
_DAY_PARTITION_SQL = (
    PARTITION_BOUNDS_SQL
    + """
SELECT relname FROM partition_bounds WHERE lo = %(day)s AND hi = %(day)s + interval '1 day'
"""
)

# The partition's indexes of this kind, with whether each is valid.
_OURS_SQL = """
SELECT ic.relname, x.indisvalid
FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid
WHERE x.indrelid = %s::regclass AND starts_with(ic.relname, %s)
"""


def index_open_day(conn: psycopg.Connection, *, now: datetime | None = None) -> str | None:
    """Build the index of the current bound if its partition lacks it, and drop that
    partition's other indexes of this kind; returns the name of the index built, None
    when there was nothing to build. `conn` must be in autocommit mode (CONCURRENTLY)."""
    bound = bound_to_build(now or datetime.now(UTC))
    if bound is None:
        return None
    day = bound.replace(hour=0, minute=0, second=0, microsecond=0)
    row = conn.execute(_DAY_PARTITION_SQL, {"day": day}).fetchone()
    if row is None:  # not a day partition (PARTITION_INTERVAL=month), or none yet
        return None
    partition = str(row[0])
    wanted = index_name(partition, bound)
    rows = conn.execute(_OURS_SQL, (partition, partition + INDEX_INFIX)).fetchall()
    ours: dict[str, bool] = {str(name): bool(valid) for name, valid in rows}
    built = None
    conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{WAIT_SECONDS}s",))
    try:
        if not ours.get(wanted, False):
            old = conn.execute(_OLD_TRANSACTION_SQL, (OLD_TRANSACTION_SECONDS,)).fetchone()
            if old is not None:
                log.info("%s not indexed for search this run: pid %s in a transaction for %s",
                         partition, old[0], old[1])  # fmt: skip
                return None
            if wanted in ours:  # a build cut short: invalid, and in the way of the new one
                _drop(conn, wanted)
            started = time.monotonic()
            conn.execute(search_index_ddl(partition, wanted, before=bound, concurrently=True))
            log.info("indexed %s before %s in %.1f s", partition, bound, time.monotonic() - started)
            built = wanted
        for name in ours:
            if name != wanted:
                _drop(conn, name)
    except psycopg.errors.LockNotAvailable as exc:
        log.warning("%s: today's search index left as it is this run: %s", partition, exc)
    finally:
        conn.execute("RESET lock_timeout")
    return built


def _drop(conn: psycopg.Connection, index: str) -> None:
    conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(index)))
