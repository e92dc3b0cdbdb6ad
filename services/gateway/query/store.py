"""Reading stored entries: the SQL behind listing, lookups and counting.

Every function takes the tenant explicitly and runs on a connection the caller opened
in `shared.db.tenant_scope`; they read the view `tenant_log_entries`, which holds only
that transaction's tenant (sql/0002_query.sql: the second wall, and unlike the table's
row-level security it lets `search` use the trigram index). The WHERE body comes from
`shared.filters.where_sql`; this module adds order, keyset position and limits.
Statements are sent unprepared (`prepare=False`): a generic plan would lose the
plan-time partition pruning and the index choice that depend on the actual values.
Lookups by id, trace or request over every day are the exception (`_stable_plan`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import psycopg
from psycopg import AsyncConnection, sql

from shared.db import Statement
from shared.filters import CompiledFilter, where_sql
from shared.model import ENTRY_FIELDS, LEVEL_NAMES, LogEntryOut
from shared.open_day_search import split_filter

Sort = Literal["asc", "desc"]

# LogEntryOut's fields in its order (the tenant and the stored fields, shared/model.py),
# so that a row becomes an entry positionally.
_COLUMN_NAMES: tuple[str, ...] = LogEntryOut.__struct_fields__
if set(_COLUMN_NAMES) != {"tenant_id", *ENTRY_FIELDS}:
    raise RuntimeError(f"LogEntryOut's fields {_COLUMN_NAMES} are not the stored ones")
_COLUMNS = sql.SQL(", ").join(sql.Identifier(name) for name in _COLUMN_NAMES)
_LEVEL = _COLUMN_NAMES.index("level")
_TIMESTAMP = _COLUMN_NAMES.index("timestamp")


def entry_from_row(row: Sequence[Any]) -> LogEntryOut:
    """A row starting with `_COLUMN_NAMES` in the seed's shape (level by name, time in
    UTC); columns after those are left out."""
    values = list(row[: len(_COLUMN_NAMES)])
    values[_LEVEL] = LEVEL_NAMES[values[_LEVEL] - 1]
    values[_TIMESTAMP] = values[_TIMESTAMP].astimezone(UTC)
    return LogEntryOut(*values)


def entries_statement(
    tenant_id: uuid.UUID,
    f: CompiledFilter,
    *,
    sort: Sort,
    after: tuple[datetime, uuid.UUID] | None = None,
    offset: int = 0,
    limit: int,
    count_cap: int | None = None,
) -> Statement:
    """Up to `limit` entries matching `f`, ordered by (timestamp, id) in `sort` order,
    starting strictly after the sort key `after` (keyset) and skipping `offset` rows.
    With `count_cap`, each row ends with how many entries match `f` (counting no
    further than the cap, as count_up_to does): an uncorrelated subquery, run once.

    The (timestamp, id) order is total, so a keyset walk never repeats or skips an entry.
    The keyset is spelled `ts <= x AND (ts < x OR id < y)` rather than as a row
    comparison so that its first half bounds the tenant+time index scan.
    """
    where = where_sql(tenant_id, f)
    columns: sql.Composable = _COLUMNS
    params: list[Any] = []
    if count_cap is not None:
        count = count_statement(tenant_id, f, count_cap)
        columns = sql.SQL("{}, ({})").format(_COLUMNS, count.query)
        params += count.params
    clause = where.clause
    params += where.params
    if after is not None:
        op = sql.SQL("<" if sort == "desc" else ">")
        clause = sql.SQL('{} AND "timestamp" {}= %s AND ("timestamp" {} %s OR id {} %s)').format(
            clause, op, op, op
        )
        params += [after[0], after[0], after[1]]
    direction = sql.SQL("DESC" if sort == "desc" else "ASC")
    query = sql.SQL(
        'SELECT {} FROM tenant_log_entries WHERE {} ORDER BY "timestamp" {}, id {} '
        "LIMIT %s OFFSET %s"
    ).format(columns, clause, direction, direction)
    return Statement(query, [*params, limit, offset])


def count_statement(
    tenant_id: uuid.UUID, f: CompiledFilter, cap: int, *, split: datetime | None = None
) -> Statement:
    """How many entries match, counting no further than `cap` (bounded work). A search
    whose window crosses `split` is counted in two parts, the older one able to use
    today's search index (shared/open_day_search.py)."""
    wheres = [where_sql(tenant_id, part) for part in split_filter(f, split) or (f,)]
    union = sql.SQL(" UNION ALL ").join(
        sql.SQL("(SELECT 1 FROM tenant_log_entries WHERE {})").format(w.clause) for w in wheres
    )
    query = sql.SQL("SELECT count(*) FROM ({} LIMIT %s) AS capped").format(union)
    return Statement(query, [*(p for w in wheres for p in w.params), cap])


def entry_statement(tenant_id: uuid.UUID, entry_id: uuid.UUID) -> Statement:
    query = sql.SQL(
        "SELECT {} FROM tenant_log_entries WHERE tenant_id = %s AND id = %s LIMIT 1"
    ).format(_COLUMNS)
    return Statement(query, [tenant_id, entry_id])


async def fetch_entries(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    f: CompiledFilter,
    *,
    sort: Sort,
    after: tuple[datetime, uuid.UUID] | None = None,
    offset: int = 0,
    limit: int,
    split: datetime | None = None,
) -> list[LogEntryOut]:
    """The entries `entries_statement` selects, in the seed's shape.

    A search whose window crosses `split` (shared/open_day_search.py), asked from its
    start (no offset), is read in two parts, the newer first (the older first with
    `sort=asc`): the older part can use today's search index, and is read only when the
    first does not fill the page."""
    parts = split_filter(f, split) if offset == 0 else None
    if parts is None:
        return await _entries(conn, tenant_id, f, sort, after, offset, limit)
    first, second = parts if sort == "desc" else parts[::-1]
    entries = await _entries(conn, tenant_id, first, sort, after, 0, limit)
    if len(entries) < limit:
        entries += await _entries(conn, tenant_id, second, sort, after, 0, limit - len(entries))
    return entries


async def _entries(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    f: CompiledFilter,
    sort: Sort,
    after: tuple[datetime, uuid.UUID] | None,
    offset: int,
    limit: int,
) -> list[LogEntryOut]:
    s = entries_statement(tenant_id, f, sort=sort, after=after, offset=offset, limit=limit)
    cur = await conn.execute(s.query, s.params, prepare=_stable_plan(f))
    return [entry_from_row(row) for row in await cur.fetchall()]


async def fetch_counted_entries(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    f: CompiledFilter,
    *,
    sort: Sort,
    offset: int = 0,
    limit: int,
    count_cap: int,
) -> tuple[list[LogEntryOut], int | None]:
    """The entries fetch_entries reads from the start of `f`'s matches (no keyset), and
    how many match up to `count_cap`, counted by the same statement: where a page's
    total is counted anyway, that saves count_up_to's round trip and planning (a
    service's WARN and above over an hour at 10M rows: 0.3 ms of PostgreSQL, more in the
    gateway). The count is None when no row came back (a page past the last). Not for
    searches: fetch_entries may read those in two parts."""
    if f.search_terms:
        raise ValueError("a search's entries are read by fetch_entries")
    s = entries_statement(tenant_id, f, sort=sort, offset=offset, limit=limit, count_cap=count_cap)
    cur = await conn.execute(s.query, s.params, prepare=False)
    rows = await cur.fetchall()
    return [entry_from_row(row) for row in rows], (int(rows[0][-1]) if rows else None)


def _stable_plan(f: CompiledFilter) -> bool:
    """Whether `f` is a trace or request lookup over every day, whose statement is
    prepared. With no time bound there is no partition to prune, and the plan is the same
    for every value (that id's index in each partition): a generic plan skips planning,
    half of such a lookup's time in PostgreSQL at 10M rows (0.35-0.5 ms of planning
    eleven partitions against 0.1-0.2 of execution)."""
    return (
        (f.trace_id is not None or f.request_id is not None)
        and f.start is None
        and f.end is None
        and not f.search_terms
    )


async def count_up_to(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    f: CompiledFilter,
    cap: int,
    *,
    split: datetime | None = None,
) -> int:
    """How many entries match, counting no further than `cap` (`split`: see
    count_statement)."""
    s = count_statement(tenant_id, f, cap, split=split)
    cur = await conn.execute(s.query, s.params, prepare=False)
    row = await cur.fetchone()
    return int(row[0]) if row else 0


# The statement timeout lowered to the budget (never raised: 0, none, counts as above it),
# returning the one to put back, in milliseconds.
_LOWER_TIMEOUT = """
SELECT setting, set_config('statement_timeout', least(%s, nullif(setting::int, 0))::text, true)
FROM pg_settings WHERE name = 'statement_timeout'
"""


async def count_within(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    f: CompiledFilter,
    cap: int,
    budget_ms: int,
    *,
    split: datetime | None = None,
) -> int | None:
    """How many entries match, counting no further than `cap` and for at most
    `budget_ms`; None when that was not enough time. The count runs in a savepoint with
    its own statement timeout: cut short, it is rolled back alone and the caller's
    transaction goes on (with its own timeout again)."""
    try:
        async with conn.transaction():
            cur = await conn.execute(_LOWER_TIMEOUT, (budget_ms,), prepare=False)
            row = await cur.fetchone()
            assert row is not None
            counted = await count_up_to(conn, tenant_id, f, cap, split=split)
            # Put back by hand: a released savepoint keeps what SET LOCAL did inside it.
            await conn.execute(
                "SELECT set_config('statement_timeout', %s, true)", (row[0],), prepare=False
            )
    except psycopg.errors.QueryCanceled:
        return None
    return counted


async def estimate_count(
    conn: AsyncConnection[Any], tenant_id: uuid.UUID, f: CompiledFilter
) -> int:
    """The planner's estimate of how many entries match (EXPLAIN: no rows are read)."""
    where = where_sql(tenant_id, f)
    query = sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM tenant_log_entries WHERE {}").format(
        where.clause
    )
    cur = await conn.execute(query, where.params, prepare=False)
    row = await cur.fetchone()
    if row is None:
        return 0
    return int(row[0][0]["Plan"]["Plan Rows"])


async def get_entry(
    conn: AsyncConnection[Any], tenant_id: uuid.UUID, entry_id: uuid.UUID
) -> LogEntryOut | None:
    """One entry by id, or None when the tenant has no such entry."""
    s = entry_statement(tenant_id, entry_id)
    cur = await conn.execute(s.query, s.params, prepare=True)  # a stable plan, as above
    row = await cur.fetchone()
    return entry_from_row(row) if row else None
