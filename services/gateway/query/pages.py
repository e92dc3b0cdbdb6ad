"""One page of log entries: filter + page request in, entries + totals + cursor out.

Pages are numbered (page/page_size, the seed's way: an OFFSET, fine for the first
pages) or follow `next_cursor` (keyset: as fast at page 10,000 as at page 1). The total
is exact when the filter names only service, level and environment (from the rollups,
past COUNT_CAP too), except for a tenant's whole time range far past the cap; otherwise
exact up to COUNT_CAP (SEARCH_COUNT_CAP with a search) and then the planner's estimate,
flagged. It is counted once per walk (a cursor carries it), never by a COUNT(*) over
millions of rows.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from litestar import Response
from psycopg import AsyncConnection

from services.gateway.query.cache import QueryCache, cached_response, filter_key, range_is_closed
from services.gateway.query.cursors import Keyset, check_cursor, decode_cursor, make_cursor
from services.gateway.query.guard import QueryGuard
from services.gateway.query.params import PageRequest
from services.gateway.query.store import (
    count_up_to,
    count_within,
    estimate_count,
    fetch_counted_entries,
    fetch_entries,
    get_entry,
)
from shared.errors import BadRequest, NotFound
from shared.filters import CompiledFilter, LogFilter, compile_filter
from shared.model import LogEntryOut
from shared.open_day_search import split_now
from shared.rollups import FURTHEST_AHEAD, count_groups

COUNT_CAP = 10_000
# A tenant's whole time range (no other term) is estimated first, from per-partition
# statistics of the tenant and time columns; the estimate is taken as it is when it is
# this many times the cap, and the matches are counted up to the cap otherwise. Counting
# can only change the answer when the planner overestimates this many times over: past
# the cap the total is the estimate either way. At 10M rows the estimates of every
# benchmark tenant's hour, day and week were within 15 % of the count, and counting to
# the cap cost 1.5-2.5 ms of a 24-hour page's 4-6 (0.5 for the estimate).
ESTIMATE_TRUSTED_OVER_CAP = 3
# With a search the planner's estimate is a guess (the selectivity of ILIKE on a
# substring): 6 for 247 matches in a 20k-row tenant. Below this many it is checked by
# counting, within a time budget (measured at 10M rows: 9-41 ms for such counts).
SEARCH_COUNT_CAP = 1_000
SEARCH_COUNT_BUDGET_MS = 100
# list/query without start_time read this far back from end_time (or now).
DEFAULT_WINDOW = timedelta(hours=24)

_encoder = msgspec.json.Encoder()


class LogPage(msgspec.Struct):
    """A page of entries, newest first unless `sort=asc`.

    `total_count` is exact unless `total_is_estimate` (more than 10,000 matches, or
    1,000 with `search`: then it is the planner's estimate or, if higher, the number
    counted so far). `next_cursor` is set when `has_more`: send it back with the same
    filters to get the next page.
    """

    entries: list[LogEntryOut]
    page: int
    page_size: int
    total_count: int
    total_is_estimate: bool
    has_more: bool
    next_cursor: str | None = None


async def read_page(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    f: LogFilter,
    request: PageRequest,
    *,
    now: datetime,
    default_window: timedelta | None,
) -> LogPage:
    """The page `request` asks for. Raises BadRequest for a cursor of another query and
    ValidationFailed for a bad filter."""
    cursor = decode_cursor(request.cursor) if request.cursor else None
    if cursor is not None:
        now = cursor.now  # relative times resolve as they did on the first page
    compiled = resolve_filter(f, now, default_window)
    if cursor is not None:
        check_cursor(cursor, tenant_id, request.sort, compiled)
    size = request.page_size
    page = cursor.page + 1 if cursor else request.page
    if compiled.is_empty_range:
        return LogPage([], page, size, 0, False, False)
    offset = 0 if cursor else (request.page - 1) * size
    split = split_now()  # today's search index serves by the clock, not the cursor's `now`
    counted: int | None = None
    if cursor is None and compiled.start is not None and counted_first(compiled):
        entries, counted = await fetch_counted_entries(
            conn,
            tenant_id,
            compiled,
            sort=request.sort,
            offset=offset,
            limit=size + 1,
            count_cap=COUNT_CAP + 1,
        )
    else:
        entries = await fetch_entries(
            conn,
            tenant_id,
            compiled,
            sort=request.sort,
            after=(cursor.timestamp, cursor.id) if cursor else None,
            offset=offset,
            limit=size + 1,
            split=split,
        )
    has_more = len(entries) > size
    del entries[size:]
    if cursor is not None:
        total, estimated = cursor.total, cursor.total_is_estimate
    elif offset == 0 and not has_more:
        total, estimated = len(entries), False
    else:
        seen = offset + len(entries) + (1 if has_more else 0)
        total, estimated = await count_total(
            conn, tenant_id, compiled, at_least=seen, split=split, counted=counted
        )
    next_cursor = None
    if has_more:
        last = entries[-1]
        next_cursor = make_cursor(
            sort=request.sort,
            last=Keyset(last.timestamp, last.id),
            now=now,
            page=page,
            total=total,
            total_is_estimate=estimated,
            tenant_id=tenant_id,
            f=compiled,
        )
    return LogPage(entries, page, size, total, estimated, has_more, next_cursor)


def resolve_filter(f: LogFilter, now: datetime, default_window: timedelta | None) -> CompiledFilter:
    compiled = compile_filter(f, now)
    return compiled.with_default_window(default_window, now) if default_window else compiled


def counted_first(f: CompiledFilter) -> bool:
    """Whether count_total starts by counting `f`'s matches up to the cap (not a search,
    not a whole time range, not a level or environment alone): read_page then counts
    them with the page, in the same statement, when the filter has a window. (A lookup
    of a trace or request over every day has none: it is prepared, and its total is
    seldom needed.)"""
    return not (
        f.search_terms or _whole_time_range(f) or (f.uses_only_rollup_dimensions and not f.services)
    )


async def count_total(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    f: CompiledFilter,
    *,
    at_least: int = 0,
    split: datetime | None = None,
    counted: int | None = None,
) -> tuple[int, bool]:
    """(total, is_estimate): exact up to COUNT_CAP, else the planner's row estimate,
    which for a whole time range is taken without counting when it is
    ESTIMATE_TRUSTED_OVER_CAP times the cap. A filter of rollup dimensions only
    (service, level, environment) is exact past the cap: counted from the rollups.

    With search terms, counting to COUNT_CAP would test up to every row of the window
    (86-306 ms per page at 10M rows where the page itself took 6-17), so the estimate
    (never below `at_least`, what the page itself proved) is checked by a count only
    when it is below SEARCH_COUNT_CAP: exact when the count stays below the cap, the
    count (flagged) when it reaches it, the estimate when SEARCH_COUNT_BUDGET_MS is not
    enough. An estimate above the cap is kept: a capped count could not improve on it.
    `split`: where a search is counted in two parts (store.count_statement).
    `counted`: the matches already counted up to COUNT_CAP + 1, where `counted_first`.
    """
    if f.search_terms:
        estimate = max(at_least, await estimate_count(conn, tenant_id, f))
        if estimate < SEARCH_COUNT_CAP:
            within = await count_within(
                conn, tenant_id, f, SEARCH_COUNT_CAP + 1, SEARCH_COUNT_BUDGET_MS, split=split
            )
            if within is not None:
                # Exact below the cap; past it a lower bound above the estimate, flagged.
                return within, within > SEARCH_COUNT_CAP
        return estimate, True
    planned: int | None = None
    if _whole_time_range(f):
        planned = await estimate_count(conn, tenant_id, f)
        if planned > COUNT_CAP * ESTIMATE_TRUSTED_OVER_CAP:
            # Counting could only confirm what the planner already says: far more than
            # the cap. The latest 100 of a day at 10M rows: 1.8 ms of its 4.6 in SQL.
            return max(planned, at_least), True
    elif f.uses_only_rollup_dimensions and not f.services:
        # A level or environment filter: its entries are among all of the tenant's in
        # the window, each fetched to look at it, where the rollups hold the exact count
        # in a few cells (the busiest benchmark tenant's ERROR and above, one hour: 20
        # ms counted, 1.5 from the rollups; a day past the cap: 15 ms for an estimate,
        # 2.6 exact). A service's entries are counted from its index first (with the
        # level in it, sql/0016): cheaper than the rollups while few.
        return await _rollup_total(conn, tenant_id, f), False
    if counted is None:
        counted = await count_up_to(conn, tenant_id, f, COUNT_CAP + 1)
    if counted <= COUNT_CAP:
        return counted, False
    if f.uses_only_rollup_dimensions and planned is None:
        # A service's entries past the cap. (A whole time range keeps the estimate it
        # has: the latest 100 of a tenant's day is the millisecond shape.)
        return await _rollup_total(conn, tenant_id, f), False
    if planned is None:
        planned = await estimate_count(conn, tenant_id, f)
    return max(counted, planned), True


async def _rollup_total(conn: AsyncConnection[Any], tenant_id: uuid.UUID, f: CompiledFilter) -> int:
    """The exact number of matches of a filter of rollup dimensions only (an open end
    closed at rollups.FURTHEST_AHEAD, as the stats windows close theirs)."""
    if f.end is None:
        f = replace(f, end=datetime.now(UTC) + FURTHEST_AHEAD)
    groups, _ = await count_groups(conn, tenant_id, f, [])
    return groups[0].count if groups else 0


def _whole_time_range(f: CompiledFilter) -> bool:
    """Whether `f` is a time range of the tenant and nothing else: the filter whose
    matches most often run far past the cap (a day of a busy tenant). A narrower one is
    counted first, as its count usually stays below the cap and the estimate (0.6 ms
    of planning) is not needed."""
    return f.uses_only_rollup_dimensions and not (
        f.services or f.levels or f.min_level is not None or f.environment
    )


async def entry_by_id(guard: QueryGuard, tenant_id: uuid.UUID, entry_id: uuid.UUID) -> LogEntryOut:
    async with guard.read(tenant_id) as conn:
        entry = await get_entry(conn, tenant_id, entry_id)
    if entry is None:
        raise NotFound(f"no log entry {entry_id} for this tenant")
    return entry


async def lookup(
    guard: QueryGuard,
    tenant_id: uuid.UUID,
    field: str,
    value: str,
    start: str | None,
    end: str | None,
    page_request: PageRequest,
) -> LogPage:
    """Every entry with `field` = `value` (a trace or a request), across all retained days
    unless a window is given. None for this tenant is 404, as for an unknown id: the answer
    is the same whether it never existed or belongs to another tenant."""
    raw = _lookup_filter(field, value, start, end)
    async with guard.read(tenant_id) as conn:
        page = await read_page(
            conn, tenant_id, raw, page_request, now=datetime.now(UTC), default_window=None
        )
    if not page.entries and page_request.cursor is None and page_request.page == 1:
        raise NotFound(f"no log entries with {field} {value!r} for this tenant")
    return page


def _lookup_filter(field: str, value: str, start: str | None, end: str | None) -> LogFilter:
    try:
        return msgspec.convert({field: value, "start_time": start, "end_time": end}, LogFilter)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid {field}: {exc}") from None


async def cached_page(
    guard: QueryGuard,
    cache: QueryCache,
    tenant_id: uuid.UUID,
    raw: LogFilter,
    page_request: PageRequest,
    cache_control: str,
) -> Response[bytes]:
    """A list/query page, from the query cache when an identical request was answered
    recently (closed past ranges: long; open ranges: seconds)."""
    now = datetime.now(UTC)
    compiled = compile_filter(raw, now)  # a bad filter fails here, before the cache

    async def compute() -> bytes:
        async with guard.read(tenant_id) as conn:
            page = await read_page(
                conn, tenant_id, raw, page_request, now=now, default_window=DEFAULT_WINDOW
            )
        return _encoder.encode(page)

    key = {
        "filter": filter_key(raw, compiled),
        "default_window": None if compiled.start else DEFAULT_WINDOW.total_seconds(),
        "page": page_request.page,
        "page_size": page_request.page_size,
        "cursor": page_request.cursor,
        "sort": page_request.sort,
    }
    return await cached_response(
        cache,
        tenant_id,
        "list",
        key,
        closed=range_is_closed(cache, raw, compiled, now),
        compute=compute,
        cache_control=cache_control,
    )
