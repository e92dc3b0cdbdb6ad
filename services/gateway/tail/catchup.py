"""Live tail reads from PostgreSQL: how far a tenant's commits have gone, and the rows of
commits a client missed, in tail order (for resume and for lost publishes)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from services.gateway.tail.events import Position
from shared.db import tenant_scope
from shared.filters import CompiledFilter, where_sql
from shared.model import ENTRY_FIELDS, LogRecord

# How many commits one page looks at; a page stops earlier once it holds PAGE_ROWS rows.
_PAGE_COMMITS = 500
PAGE_ROWS = 2_000

_COMMITS_SQL = """
SELECT seq, rows FROM tail_batches
WHERE tenant_id = %s AND seq BETWEEN %s AND %s
ORDER BY seq LIMIT %s
"""

# Each commit's ids and timestamps, unnested in order, find their rows through the
# tenant+time index (with run-time partition pruning): no index on log_entries.id.
_ROWS_SQL = """
SELECT b.seq, k.ord - 1, {columns}
FROM tail_batches b
CROSS JOIN LATERAL unnest(b.ids, b.stamps) WITH ORDINALITY AS k(id, ts, ord)
JOIN log_entries e ON e.tenant_id = b.tenant_id AND e."timestamp" = k.ts AND e.id = k.id
WHERE b.tenant_id = %s AND b.seq BETWEEN %s AND %s AND (b.seq > %s OR k.ord > %s)
  AND {filter}
ORDER BY b.seq, k.ord
"""


# A LogRecord's fields from the row `e`; metadata as its JSON text, as the stream has it.
_ENTRY_COLUMNS = sql.SQL(", ").join(
    sql.SQL("e.metadata::text") if name == "metadata" else sql.Identifier("e", name)
    for name in ENTRY_FIELDS
)
_METADATA = ENTRY_FIELDS.index("metadata")


@dataclass(slots=True)
class CatchUpPage:
    """Part of what a client missed: the matching entries as (seq, index, record) in tail
    order, and the position reached. `missing` is a range of commits no longer kept
    (older than the resume window), reported before the entries."""

    through: Position
    entries: list[tuple[int, int, LogRecord]] = field(default_factory=list)
    missing: tuple[int, int] | None = None


class TailReader:
    """Reads for the tail, at most `concurrency` at a time so catching-up clients never
    take every connection of the pool from the query API."""

    def __init__(self, pool: AsyncConnectionPool, concurrency: int) -> None:
        self._pool = pool
        self._slots = asyncio.Semaphore(concurrency)

    async def committed_seq(self, tenant_id: uuid.UUID) -> int:
        async with self._slots, tenant_scope(self._pool, tenant_id) as conn:
            cur = await conn.execute(
                "SELECT last_seq FROM tail_seq WHERE tenant_id = %s", (tenant_id,)
            )
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def committed_seqs(self, tenant_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        """The last commit of each tenant named, in one query (the gateway's safety net
        against lost publishes polls every tenant it serves at once)."""
        async with self._slots, self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT tenant_id, last_seq FROM tail_seq WHERE tenant_id = ANY(%s)",
                (list(tenant_ids),),
            )
            return {row[0]: int(row[1]) for row in await cur.fetchall()}

    async def page(
        self, tenant_id: uuid.UUID, where: CompiledFilter, after: Position, upto: int
    ) -> CatchUpPage:
        """The next page of entries matching `where` after `after`, up to the end of
        commit `upto` (known to be committed)."""
        first = after.seq + 1 if after.at_end else after.seq
        if first > upto:
            return CatchUpPage(through=max(after, Position(upto)))
        skip = 0 if after.at_end else after.index + 1  # entries of `first` already sent
        async with self._slots, tenant_scope(self._pool, tenant_id) as conn:
            cur = await conn.execute(_COMMITS_SQL, (tenant_id, first, upto, _PAGE_COMMITS))
            commits = [(int(seq), int(rows)) for seq, rows in await cur.fetchall()]
            if not commits:
                return CatchUpPage(through=Position(upto), missing=(first, upto))
            missing = (first, commits[0][0] - 1) if commits[0][0] > first else None
            last, rows = commits[0][0], 0
            for seq, count in commits:
                rows += count - (skip if seq == after.seq else 0)
                last = seq
                if rows >= PAGE_ROWS:
                    break
            through = Position(last if rows >= PAGE_ROWS or len(commits) == _PAGE_COMMITS else upto)
            w = where_sql(tenant_id, where, alias="e")
            cur = await conn.execute(
                sql.SQL(_ROWS_SQL).format(columns=_ENTRY_COLUMNS, filter=w.clause),
                [tenant_id, commits[0][0], last, after.seq, skip, *w.params],
            )
            entries: list[tuple[int, int, LogRecord]] = []
            seen: set[tuple[int, int]] = set()
            for seq, index, *columns in await cur.fetchall():
                # A client may send the same id and timestamp twice: one row per entry.
                if (seq, index) in seen:
                    continue
                seen.add((seq, index))
                metadata = columns[_METADATA]
                columns[_METADATA] = metadata.encode() if metadata is not None else None
                entries.append((int(seq), int(index), LogRecord(*columns)))
        return CatchUpPage(through=through, entries=entries, missing=missing)
