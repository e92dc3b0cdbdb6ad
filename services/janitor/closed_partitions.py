"""Closed partitions rewritten in tenant order, with the search index built on them.

While a day is open its rows lie in arrival order: every tenant's entries are spread over
the whole partition, and nothing but the B-trees is maintained (an index on `message`
would cut the COPY rate to ~40 %, README "Search"). Once the day has been over for
LATE_ENTRY_GRACE, the janitor rewrites its partition once, sorted by (tenant, service,
time), and builds on the copy the parent's indexes plus the search index: a GIN of the
tenant (btree_gin) and the trigrams of `message`. Counting a word over days then reads
only the tenant's matches out of the index and finds them on neighbouring pages, instead
of decoding every tenant's matches and visiting a page per match (a small tenant's count
of a common word over one 1.4M-row day: 72 → 7 ms; the busiest tenant's: 850 → 218 ms).
Inside a tenant, each service's rows lie together, newest first: a service's page of a
past hour (its warnings, a Loki stream) reads ~20 neighbouring pages rather than a page
per entry (the busiest tenant at 10M rows, 101 entries of WARN and above: 98 buffers →
27; README "Closed days in tenant order"). A page of every service of a tenant reads a
run of each service's rows instead (~100 buffers where it read ~10).

The copy replaces the partition in one transaction, which holds a SHARE lock on the old
partition from the start: reads go on, and a late entry or a deletion for that day waits
until the swap (or its abandonment) rather than be lost by the copy. The swap itself
needs the parent locked exclusively for a moment: it is taken with a short lock timeout,
never while a writer waits for the old partition (that writer would hold the parent and
wait for us: a deadlock), and given up after a few tries; the next run starts again.
"""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from services.janitor import metrics

log = logging.getLogger(__name__)

SEARCH_INDEX_SUFFIX = "_search"
# Entries still arriving for a day just closed (clients' batching, a collector's retries)
# would wait behind the rewrite; an hour after the close they are rare.
LATE_ENTRY_GRACE = timedelta(hours=1)
# The swap's exclusive lock on log_entries: waited for this long (readers queue behind the
# request meanwhile), this many times, a pause apart.
SWAP_LOCK_TIMEOUT_MS = 200
SWAP_TRIES = 10
SWAP_PAUSE_SECONDS = 0.5

# The partitions of log_entries with their bounds (`lo`, `hi`), read from the catalog,
# not from the name. One not of the form ensure_log_partition gives (made by hand, with
# MINVALUE say) is left out, before any bound is cast (MATERIALIZED: the casts never see
# it). A prefix for the queries below and services/janitor/open_day_search.py.
PARTITION_BOUNDS_SQL = """
WITH ranged AS MATERIALIZED (
  SELECT c.oid, c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
  WHERE i.inhparent = 'log_entries'::regclass
    AND pg_get_expr(c.relpartbound, c.oid)
        ~ '^FOR VALUES FROM \\(''[^'']+''\\) TO \\(''[^'']+''\\)$'
), partition_bounds AS (
  SELECT oid, relname, bound,
         substring(bound FROM 'FROM \\(''([^'']+)''\\)')::timestamptz AS lo,
         substring(bound FROM 'TO \\(''([^'']+)''\\)')::timestamptz AS hi
  FROM ranged
)
"""

# Partitions whose upper bound is at or before `before` and lacking a valid search index,
# oldest first, with their bound.
_UNSETTLED_SQL = (
    PARTITION_BOUNDS_SQL
    + """
SELECT p.relname, p.bound
FROM partition_bounds p
WHERE p.hi <= %s
  AND NOT EXISTS (
      SELECT 1 FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid
      WHERE x.indrelid = p.oid AND ic.relname = p.relname || %s AND x.indisvalid)
ORDER BY p.relname
LIMIT 1
"""
)

_PARENT_INDEXES_SQL = """
SELECT c.relname, pg_get_indexdef(i.indexrelid)
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = 'log_entries'::regclass
ORDER BY c.relname
"""
_PARENT_INDEX = re.compile(r"^CREATE (UNIQUE )?INDEX \S+ ON ONLY \S+ (USING .*?)( WHERE .*)?$")
# A closed partition's B-trees are built full rather than at the default fillfactor of
# 90: its rows change only by a rare late entry or by retention. At 10M rows that is
# 10 % off each of them (the tenant+time index 40.7 -> 36.7 bytes per row, the
# tenant+service+time one 54.0 -> 48.8, the id 31.6 -> 28.6).
_PACKED = " WITH (fillfactor = 100)"

# The partition's own index for each of the parent's: (parent index, partition index).
_CHILD_INDEXES_SQL = """
SELECT p.relname, c.relname
FROM pg_index x
JOIN pg_class c ON c.oid = x.indexrelid
JOIN pg_inherits i ON i.inhrelid = x.indexrelid
JOIN pg_class p ON p.oid = i.inhparent
WHERE x.indrelid = %s::regclass
"""

_COLUMNS_SQL = """
SELECT attname FROM pg_attribute
WHERE attrelid = 'log_entries'::regclass AND attnum > 0 AND NOT attisdropped
ORDER BY attnum
"""

# A writer waiting for the old partition holds log_entries itself: waiting for the
# parent then would close a cycle.
_WAITED_FOR_SQL = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE relation = %s::regclass AND NOT granted)"
)


def parent_index_ddl(
    conn: psycopg.Connection, table: str, *, prefix: str | None = None, packed: bool = False
) -> list[sql.Composed]:
    """The partitioned indexes of log_entries as CREATE INDEX statements for `table`: the
    indexes ATTACH PARTITION adopts instead of building (storage parameters are not
    compared). Named `prefix` + the parent index's name after "log_entries" when a
    prefix is given, else by PostgreSQL; B-trees `packed` (fillfactor 100) if asked."""
    ddl: list[sql.Composed] = []
    for name, definition in conn.execute(_PARENT_INDEXES_SQL).fetchall():
        match = _PARENT_INDEX.match(definition)
        if match is None:
            raise RuntimeError(f"unexpected index definition: {definition}")
        index = (
            sql.SQL(" {}").format(sql.Identifier(prefix + name.removeprefix("log_entries")))
            if prefix
            else sql.SQL("")
        )
        unique, method, where = match.groups()
        if packed and method.startswith("USING btree "):
            method += _PACKED
        ddl.append(
            sql.SQL("CREATE {}INDEX{} ON {} {}{}").format(
                sql.SQL(unique or ""),
                index,
                sql.Identifier(table),
                sql.SQL(method),
                sql.SQL(where or ""),
            )
        )
    return ddl


def search_index_ddl(
    table: str, index: str, *, before: datetime | None = None, concurrently: bool = False
) -> sql.Composed:
    """The search index: the tenant (btree_gin) beside the trigrams of `message`, so that a
    tenant's matches come out of the index alone; of the rows dated `before` only, if
    given (today's past hours, services/janitor/open_day_search.py)."""
    return sql.SQL(
        'CREATE INDEX{} {} ON {} USING gin (tenant_id, (message COLLATE "C") gin_trgm_ops){}'
    ).format(
        sql.SQL(" CONCURRENTLY" if concurrently else ""),
        sql.Identifier(index),
        sql.Identifier(table),
        sql.SQL(' WHERE "timestamp" < {}').format(sql.Literal(before)) if before else sql.SQL(""),
    )


def settle_closed_partition(
    conn: psycopg.Connection, *, before: datetime | None = None
) -> str | None:
    """Rewrite one closed partition (upper bound at or before `before`, default: now minus
    LATE_ENTRY_GRACE) that lacks the search index, oldest first, in (tenant, service, time) order
    with its indexes; returns its name, or None when there is none or the swap could not
    get its lock (tried again next run). The janitor calls it once per run, so a backlog
    (a database upgraded with many past days) is settled a partition per run.

    `conn` must be in autocommit mode. An interrupted rewrite leaves nothing behind: it
    is one transaction. It needs room for a second copy of the partition meanwhile.
    """
    if before is None:
        before = datetime.now(UTC) - LATE_ENTRY_GRACE
    row = conn.execute(_UNSETTLED_SQL, (before, SEARCH_INDEX_SUFFIX)).fetchone()
    if row is None:
        return None
    partition, bound = str(row[0]), str(row[1])
    started = time.monotonic()
    swapped = False
    with conn.transaction():
        sorted_copy = _copy_sorted(conn, partition, bound)
        if not _lock_for_swap(conn, partition):
            raise psycopg.Rollback  # the copy goes; the partition stays as it was
        _swap(conn, partition, sorted_copy, bound)
        swapped = True
    if not swapped:
        metrics.CLOSED_PARTITIONS.labels("gave_up").inc()
        log.warning("%s not settled: log_entries stayed locked; next run tries again", partition)
        return None
    metrics.CLOSED_PARTITIONS.labels("settled").inc()
    # Outside the transaction, as VACUUM must be: the visibility map set (index-only
    # counts) and statistics of the rewritten rows.
    conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(partition)))
    log.info("settled %s in %.1f s", partition, time.monotonic() - started)
    return partition


def _copy_sorted(conn: psycopg.Connection, partition: str, bound: str) -> str:
    """A copy of `partition` in (tenant, service, time) order, with the parent's indexes, the
    search index and a CHECK of the partition's bound (so that ATTACH need not scan it);
    returns its name. Writes to the partition wait from here until the transaction ends."""
    copy = partition + "_sorted"
    conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(sql.Identifier(partition)))
    conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
    conn.execute("SET LOCAL work_mem = '64MB'")
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (LIKE log_entries INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        ).format(sql.Identifier(copy))
    )
    columns = sql.SQL(", ").join(
        sql.Identifier(str(name)) for (name,) in conn.execute(_COLUMNS_SQL).fetchall()
    )
    conn.execute(
        sql.SQL(
            "INSERT INTO {} ({}) SELECT {} FROM {} "
            'ORDER BY tenant_id, service_name, "timestamp" DESC'
        ).format(sql.Identifier(copy), columns, columns, sql.Identifier(partition))
    )
    for statement in parent_index_ddl(conn, copy, prefix=copy, packed=True):
        conn.execute(statement)
    conn.execute(search_index_ddl(copy, copy + SEARCH_INDEX_SUFFIX))
    conn.execute(
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({})").format(
            sql.Identifier(copy), sql.Identifier(copy + "_bound"), sql.SQL(_bound_check(bound))
        )
    )
    return copy


def _bound_check(bound: str) -> str:
    """`FOR VALUES FROM ('lo') TO ('hi')` as the CHECK expression ATTACH recognises."""
    match = re.fullmatch(r"FOR VALUES FROM \(('[^']+')\) TO \(('[^']+')\)", bound)
    if match is None:
        raise RuntimeError(f"unexpected partition bound: {bound}")
    lo, hi = match.groups()
    return f'"timestamp" IS NOT NULL AND "timestamp" >= {lo} AND "timestamp" < {hi}'


def _lock_for_swap(conn: psycopg.Connection, partition: str) -> bool:
    """log_entries locked exclusively (until the transaction ends), or False after
    SWAP_TRIES. Never requested while a writer waits for `partition` (that writer holds
    log_entries and waits for us), and each request waits SWAP_LOCK_TIMEOUT_MS at most,
    well under deadlock_timeout (1 s by default): a writer that starts waiting for the
    partition meanwhile finds us gone before its deadlock check could pick it."""
    for attempt in range(SWAP_TRIES):
        if attempt:
            time.sleep(SWAP_PAUSE_SECONDS)
        row = conn.execute(_WAITED_FOR_SQL, (partition,)).fetchone()
        if row and row[0]:
            continue
        try:
            with conn.transaction():  # a savepoint: a timed-out request leaves the rest
                conn.execute(f"SET LOCAL lock_timeout = {SWAP_LOCK_TIMEOUT_MS}")
                conn.execute("LOCK TABLE log_entries IN ACCESS EXCLUSIVE MODE")
        except psycopg.errors.LockNotAvailable:
            continue
        conn.execute("SET LOCAL lock_timeout = 0")
        return True
    return False


def _swap(conn: psycopg.Connection, partition: str, copy: str, bound: str) -> None:
    """The sorted copy in the old partition's place, under its name; its indexes take the
    names the old partition's had (the search index, the partition's name + suffix)."""
    old, new = sql.Identifier(partition), sql.Identifier(copy)
    names = {
        copy + str(parent).removeprefix("log_entries"): str(child)
        for parent, child in conn.execute(_CHILD_INDEXES_SQL, (partition,)).fetchall()
    }
    names[copy + SEARCH_INDEX_SUFFIX] = partition + SEARCH_INDEX_SUFFIX
    conn.execute(sql.SQL("ALTER TABLE log_entries DETACH PARTITION {}").format(old))
    conn.execute(sql.SQL("DROP TABLE {}").format(old))
    conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(new, old))
    for (index,) in conn.execute(
        "SELECT c.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid "
        "WHERE x.indrelid = %s::regclass",
        (partition,),
    ).fetchall():
        name = names.get(str(index), partition + str(index).removeprefix(copy))
        conn.execute(
            sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                sql.Identifier(str(index)), sql.Identifier(name)
            )
        )
    conn.execute(
        sql.SQL("ALTER TABLE log_entries ATTACH PARTITION {} {}").format(old, sql.SQL(bound))
    )
    conn.execute(
        sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(old, sql.Identifier(copy + "_bound"))
    )
