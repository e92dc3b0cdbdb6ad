"""The full-text search index, built on closed partitions only.

A trigram GIN index on `message` serves `search` (case-insensitive substring match), but
maintaining it while rows arrive cuts the COPY rate to ~40 % (README, "Search"). So the
open partitions (today and the days ahead) have none: they are searched by walking the
tenant+time index, and the janitor builds the trigram index on each partition once its
day is over. Late entries written into a past partition keep an existing index current.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

INDEX_SUFFIX = "_message_trgm"

# Partitions whose upper bound is at or before `before` and lacking a valid index, oldest
# first. The bound is read from the catalog, not from the partition's name.
_MISSING_SQL = """
SELECT c.relname
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'log_entries'::regclass
  AND substring(pg_get_expr(c.relpartbound, c.oid) FROM 'TO \\(''([^'']+)''\\)')::timestamptz
      <= %s
  AND NOT EXISTS (
      SELECT 1 FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid
      WHERE x.indrelid = c.oid AND ic.relname = c.relname || %s AND x.indisvalid)
ORDER BY c.relname
LIMIT 1
"""


def build_search_index(conn: psycopg.Connection, *, before: datetime | None = None) -> str | None:
    """Build the trigram index of one closed partition (ending at or before `before`,
    default: the start of today, UTC) that lacks it; returns the partition's name, or
    None when every closed partition has one. The janitor calls it once per run, so a
    backlog (a database upgraded with many past days) is indexed a day per run rather
    than holding the janitor for long.

    `conn` must be in autocommit mode: the index is built CONCURRENTLY so that late
    writes into the partition are not blocked. A build interrupted earlier leaves an
    invalid index behind, which is dropped and rebuilt.
    """
    if before is None:
        before = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    row = conn.execute(_MISSING_SQL, (before, INDEX_SUFFIX)).fetchone()
    if row is None:
        return None
    partition = str(row[0])
    index = sql.Identifier(partition + INDEX_SUFFIX)
    conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(index))
    conn.execute(
        sql.SQL(
            'CREATE INDEX CONCURRENTLY {} ON {} USING gin ((message COLLATE "C") gin_trgm_ops)'
        ).format(index, sql.Identifier(partition))
    )
    log.info("built search index on %s", partition)
    return partition
