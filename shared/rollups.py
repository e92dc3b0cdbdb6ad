"""Counting logs for stats, time buckets, the services list and storage figures.

A count over [start, end) is answered from the rollups whenever the filter only names
rollup dimensions (service, level, environment). The range is cut like a ruler: whole
UTC days in the middle (log_counts_daily), whole hours around them (log_counts_hourly),
whole minutes around those (log_counts, or log_counts_by_level when neither the filter
nor the grouping involves service or environment) and, at the two ends, the partial
minutes, counted from the rows. So answers are exact for any start and end, and a
week costs about what a day does. Any other filter term (search, ids, host, source,
metadata) counts raw rows in the range.

Raw rows are read through the view `tenant_log_entries`, as the query API reads them
(services/gateway/query/store.py): under log_entries' row-level security a `search`
could not use the trigram index (sql/0002_query.sql), and a search over a closed day of
a busy tenant scanned the whole partition.

Every function takes the tenant explicitly and filters by it; the caller provides the
connection (a tenant-scoped read transaction: the gateway's stats, the evaluator's
alert rules).
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import msgspec
from psycopg import AsyncClientCursor, AsyncConnection, sql

from shared.compaction import WATERMARK_SQL, watermark_of
from shared.db import Statement
from shared.filters import CompiledFilter, where_sql
from shared.kept_hours import KeptHours
from shared.model import Level
from shared.open_day_search import split_now
from shared.word_counts import counted_term, word_rows

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# Later than any entry can be dated (INGEST_MAX_FUTURE_MINUTES allows a year at most):
# where a count over an open-ended window is closed. The rollups hold no cell past the
# newest entry, so the far end costs nothing.
FURTHEST_AHEAD = timedelta(days=366)
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
# date_bin's origin: buckets of 1d start at UTC midnight, 6h at 00/06/12/18 UTC.
_ORIGIN = sql.SQL("TIMESTAMPTZ '2000-01-01 00:00:00+00'")


class Source(enum.Enum):
    """Where a span of the range is counted, and the time column's granularity there."""

    # Literal steps: inside this class body, MINUTE, HOUR and DAY name the members.
    RAW = ("tenant_log_entries", "timestamp", timedelta(0))
    # log_counts and the packed minutes of closed days (sql/0018_packed_minutes.sql).
    MINUTE = ("log_count_minutes", "minute", timedelta(minutes=1))
    LEVEL_MINUTE = ("log_counts_by_level", "minute", timedelta(minutes=1))
    HOUR = ("log_counts_hourly", "hour", timedelta(hours=1))
    DAY = ("log_counts_daily", "day", timedelta(days=1))

    def __init__(self, table: str, column: str, step: timedelta) -> None:
        self.table = table
        self.column = column
        self.step = step


def range_sql(source: Source, lo: datetime, hi: datetime) -> tuple[sql.Composable, list[Any]]:
    """`source`'s cells in [lo, hi): the condition and its parameters.

    Minutes are bounded by the time they are stored under (a packed one's hour, from the
    hour holding `lo`), which is how packed ones are found by their index
    (sql/0018_packed_minutes.sql); `minute` itself only where a bound cuts an hour. A
    packed cell's minute is computed, so the planner guesses what a bound on it keeps:
    a third for one, 0.5 % for two, where an edge hour keeps all of its 9,349 cells of
    the busiest tenant at 10M rows (sorted to be grouped, +8 ms, on that guess)."""
    column = sql.Identifier(source.column)
    if source is not Source.MINUTE:
        return sql.SQL("{} >= %s AND {} < %s").format(column, column), [lo, hi]
    first_hour = floor_to(lo, HOUR)
    clauses: list[sql.Composable] = [sql.SQL("stored_at >= %s AND stored_at < %s")]
    params: list[Any] = [first_hour, hi]
    if lo != first_hour:
        clauses.append(sql.SQL("{} >= %s").format(column))
        params.append(lo)
    if hi != floor_to(hi, HOUR):
        clauses.append(sql.SQL("{} < %s").format(column))
        params.append(hi)
    return sql.SQL(" AND ").join(clauses), params


# The next finer table with every dimension, to locate an entry inside a coarse cell.
_FINER = {DAY: Source.HOUR, HOUR: Source.MINUTE}


@dataclass(frozen=True, slots=True)
class Span:
    source: Source
    start: datetime
    end: datetime


def floor_to(ts: datetime, step: timedelta) -> datetime:
    return ts - (ts - _EPOCH) % step


def ceil_to(ts: datetime, step: timedelta) -> datetime:
    floored = floor_to(ts, step)
    return floored if floored == ts else floored + step


def plan_spans(
    start: datetime,
    end: datetime,
    *,
    rollups: bool,
    coarsest: timedelta = DAY,
    minutes: Source = Source.MINUTE,
    compacted_until: datetime | None = None,
) -> list[Span]:
    """Cut [start, end) into spans each counted from one table, oldest first.

    Without `rollups` the whole range is raw. With them: raw partial minutes at the
    edges, then whole minutes (from the `minutes` table), whole hours and whole days
    inward, up to the `coarsest` step (a histogram's buckets must not straddle a cell).
    Hours and days are read only before the hour of `compacted_until`, the rollup
    watermark (sql/0007_rollup_compaction.sql): later ones are not complete yet.
    """
    if rollups and compacted_until is not None:
        split = floor_to(compacted_until, HOUR)
        if split <= start:
            coarsest = MINUTE
        elif split < end:
            before = plan_spans(start, split, rollups=True, coarsest=coarsest, minutes=minutes)
            after = plan_spans(split, end, rollups=True, coarsest=MINUTE, minutes=minutes)
            return before + after
    ladder = [Source.RAW]
    if rollups:
        ladder += [minutes, *(s for s in (Source.HOUR, Source.DAY) if s.step <= coarsest)]

    def cut(lo: datetime, hi: datetime, rung: int) -> list[Span]:
        if rung + 1 < len(ladder):
            step = ladder[rung + 1].step
            inner_lo, inner_hi = ceil_to(lo, step), floor_to(hi, step)
            if inner_lo < inner_hi:
                return [
                    Span(ladder[rung], lo, inner_lo),
                    *cut(inner_lo, inner_hi, rung + 1),
                    Span(ladder[rung], inner_hi, hi),
                ]
        return [Span(ladder[rung], lo, hi)]

    if start >= end:
        return []
    return [s for s in cut(start, end, 0) if s.start < s.end]


Dimension = str  # a column of log_entries to group by
# What the rollup tables can group by; grouping by any other column (host) counts rows.
ROLLUP_DIMENSIONS = frozenset({"service_name", "level", "environment"})


def _span_select(
    tenant_id: uuid.UUID,
    f: CompiledFilter,
    span: Span,
    dims: Sequence[Dimension],
    bucket: timedelta | None,
) -> Statement:
    """One span's grouped counts: (bucket, *dims, count, first, last, step seconds)."""
    time_col = sql.Identifier(span.source.column)
    if span.source is Source.RAW:
        where = where_sql(tenant_id, replace(f, start=span.start, end=span.end))
        clause, where_params = where.clause, list(where.params)
        count = sql.SQL("count(*)")
    else:
        where = where_sql(tenant_id, replace(f, start=None, end=None))
        in_range, range_params = range_sql(span.source, span.start, span.end)
        clause = sql.SQL("{} AND {}").format(where.clause, in_range)
        where_params = [*where.params, *range_params]
        count = sql.SQL("sum(count)")
    bucket_expr, bucket_params = _bucket(time_col, bucket)
    columns = [sql.SQL("{} AS bucket").format(bucket_expr), *(sql.Identifier(d) for d in dims)]
    statement = sql.SQL(
        "SELECT {}, {} AS n, min({}) AS first, max({}) AS last, {} AS step "
        "FROM {} WHERE {} GROUP BY {}"
    ).format(
        sql.SQL(", ").join(columns),
        count,
        time_col,
        time_col,
        sql.Literal(int(span.source.step.total_seconds())),
        sql.Identifier(span.source.table),
        clause,
        sql.SQL(", ").join(sql.SQL(str(i)) for i in range(1, len(columns) + 1)),
    )
    return Statement(statement, [*bucket_params, *where_params])


def _bucket(time_col: sql.Identifier, bucket: timedelta | None) -> tuple[sql.Composable, list[Any]]:
    """The bucket column's expression and its parameters: NULL without a bucket."""
    if bucket is None:
        return sql.SQL("NULL::timestamptz"), []
    return sql.SQL("date_bin(%s::interval, {}, {})").format(time_col, _ORIGIN), [bucket]


def split_raw(spans: Sequence[Span], f: CompiledFilter, at: datetime | None) -> list[Span]:
    """`spans` with each raw one that crosses `at` cut there, when f searches words: the
    older part can then use today's search index (shared/open_day_search.py; callers
    pass `split_now()`). A bound is on a whole hour, so no bucket of
    an hour or less straddles it; a wider one gets a row from each part, which its
    readers add up."""
    if at is None or not f.search_terms:
        return list(spans)
    cut: list[Span] = []
    for span in spans:
        if span.source is Source.RAW and span.start < at < span.end:
            cut += [Span(Source.RAW, span.start, at), Span(Source.RAW, at, span.end)]
        else:
            cut.append(span)
    return cut


def spans_statement(
    tenant_id: uuid.UUID,
    f: CompiledFilter,
    spans: Sequence[Span],
    dims: Sequence[Dimension],
    bucket: timedelta | None,
    *,
    split: datetime | None = None,
) -> Statement:
    """The grouped counts of every span, one SELECT each: what `count_groups` sends,
    and what tests/test_query_plans.py EXPLAINs. `split`: see `split_raw`."""
    parts = [_span_select(tenant_id, f, s, dims, bucket) for s in split_raw(spans, f, split)]
    statement = sql.SQL(" UNION ALL ").join(sql.SQL("({})").format(p.query) for p in parts)
    return Statement(statement, [param for p in parts for param in p.params])


def cells_statement(
    tenant_id: uuid.UUID,
    f: CompiledFilter,
    spans: Sequence[Span],
    dims: Sequence[Dimension],
    bucket: timedelta | None,
    *,
    split: datetime | None = None,
) -> Statement:
    """Rows (bucket, *dims, n bigint) whose sums per (bucket, *dims) are the counts, for
    a caller that groups them itself (histograms; no bucket: NULL): raw spans count
    their rows per group, rollup spans give their cells as stored. Grouping each rollup
    span first, as spans_statement does, doubled the work: the 1-minute histogram of a
    day of the busiest tenant took 8.8 ms in PostgreSQL that way, 3.6 ms this way (10M
    rows). `split`: see `split_raw`."""
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in ("bucket", *dims, "n"))
    dim_columns = sql.SQL("").join(sql.SQL("{}, ").format(sql.Identifier(d)) for d in dims)
    where = where_sql(tenant_id, replace(f, start=None, end=None))  # the same for every cell span
    selects: list[sql.Composable] = []
    params: list[Any] = []
    for span in split_raw(spans, f, split):
        if span.source is Source.RAW:
            # Its first, last and step columns left out.
            grouped = _span_select(tenant_id, f, span, dims, bucket)
            selects.append(sql.SQL("SELECT {} FROM ({}) AS raw").format(columns, grouped.query))
            params += grouped.params
            continue
        bucket_expr, bucket_params = _bucket(sql.Identifier(span.source.column), bucket)
        in_range, range_params = range_sql(span.source, span.start, span.end)
        selects.append(
            sql.SQL("SELECT {} AS bucket, {} count AS n FROM {} WHERE {} AND {}").format(
                bucket_expr, dim_columns, sql.Identifier(span.source.table), where.clause, in_range
            )
        )
        params += [*bucket_params, *where.params, *range_params]
    statement = sql.SQL(" UNION ALL ").join(sql.SQL("({})").format(s) for s in selects)
    return Statement(statement, params)


@dataclass(slots=True)
class Group:
    """Counts of one group (bucket and/or dimension values) over the range.

    `first`/`last` are exact for entries counted raw; from rollups they are the start of
    their minute, hour or day (`first_step`/`last_step` say which), see `exact_time`.
    """

    key: tuple[Any, ...]
    count: int
    first: datetime
    first_step: timedelta
    last: datetime
    last_step: timedelta

    def add(self, count: int, first: datetime, last: datetime, step: timedelta) -> None:
        self.count += count
        if first < self.first:
            self.first, self.first_step = first, step
        if last > self.last:
            self.last, self.last_step = last, step


def _minutes_table(f: CompiledFilter, dims: Sequence[Dimension]) -> Source:
    """log_counts_by_level when it can answer (it has no service or environment), which
    is tens of times smaller than log_counts on realistic data."""
    whole_tenant = (
        not f.services
        and f.environment is None
        and "service_name" not in dims
        and "environment" not in dims
    )
    return Source.LEVEL_MINUTE if whole_tenant else Source.MINUTE


async def compacted_until(conn: AsyncConnection[Any]) -> datetime:
    """The rollup watermark: hours and days before it are complete in their tables."""
    cur = await conn.execute(WATERMARK_SQL, prepare=False)
    return watermark_of(await cur.fetchone())


async def _fetch_with_settings(
    conn: AsyncConnection[Any],
    query: sql.Composed | bytes,
    params: Sequence[Any],
    settings: Mapping[str, str],
) -> list[tuple[Any, ...]]:
    """The rows of `query`, planned with the planner `settings`; the transaction's own
    values are put back after it (it may go on to statements they would not suit).
    `conn` must be in a transaction: the settings are the transaction's, and a failed
    statement takes them back with the rest.

    The three statements (save and set, the query, put back) go in one message, the
    parameters bound by psycopg on this side: sent one by one, the two around the query
    cost a round trip each (the 1-minute histogram of a day at 10M rows: 11.8 ms that
    way, 10.7 in one message, 10.3 for the query alone). The values put back are kept
    in the transaction's own `minisource.saved.<name>` settings meanwhile. Names and
    values are this module's constants, written into the text as they are."""
    save = ", ".join(
        f"set_config('minisource.saved.{name}', current_setting('{name}'), true), "
        f"set_config('{name}', '{value}', true)"
        for name, value in settings.items()
    )
    put_back = ", ".join(
        f"set_config('{name}', current_setting('minisource.saved.{name}'), true)"
        for name in settings
    )
    body = query if isinstance(query, bytes) else query.as_bytes(conn)
    message = f"SELECT {save}; ".encode() + body + f"; SELECT {put_back}".encode()
    cur = AsyncClientCursor(conn)
    await cur.execute(message, params)
    cur.nextset()  # past the first statement's row, to the query's
    return await cur.fetchall()


# A count from the rollups reads a few thousand cells and the partial minutes at the
# range's edges, yet the planner hands the UNION of its spans to parallel workers, whose
# start costs more than the whole count. At 10M rows, the busiest tenant's 1-minute
# histogram of a day took 13.4 ms with them and 6.5 ms without; stats over 7 days 9.6
# and 4.7 ms. The same transaction may go on to read rows, where workers pay (Loki,
# alert rules): the setting is put back after the statement.
_SERIAL = {"max_parallel_workers_per_gather": "0"}


async def fetch_counts(
    conn: AsyncConnection[Any],
    query: sql.Composed | bytes,
    params: Sequence[Any],
    *,
    serial: bool,
) -> list[tuple[Any, ...]]:
    """The rows of a count; `serial` (a count from the rollups): planned without
    parallel workers. `conn` must then be in a transaction (the query API's and the
    evaluator's are)."""
    if not serial:
        cur = await conn.execute(query, params, prepare=False)
        return await cur.fetchall()
    return await _fetch_with_settings(conn, query, params, _SERIAL)


def _window(f: CompiledFilter) -> tuple[datetime, datetime]:
    if f.start is None or f.end is None:
        raise ValueError("counting needs a closed window: set start and end")
    return f.start, f.end


async def count_groups(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    f: CompiledFilter,
    dims: Sequence[Dimension],
    kept: KeptHours | None = None,
) -> tuple[list[Group], bool]:
    """Counts per combination of `dims` over f's window, with first and last times;
    returns the groups and whether rollups answered. Small results only (no buckets).
    `kept`: where a raw count keeps its whole past hours (shared/kept_hours.py)."""
    start, end = _window(f)
    rollups = f.uses_only_rollup_dimensions and ROLLUP_DIMENSIONS.issuperset(dims)
    if not rollups and kept is not None:
        kept_rows = await raw_rows(conn, tenant_id, f, dims, None, kept)
        if kept_rows is not None:
            return _groups(kept_rows, len(dims)), False
    spans = plan_spans(
        start,
        end,
        rollups=rollups,
        minutes=_minutes_table(f, dims),
        compacted_until=await compacted_until(conn) if rollups else None,
    )
    if not spans:
        return [], rollups
    query = spans_statement(tenant_id, f, spans, dims, None, split=split_now())
    rows = await fetch_counts(conn, query.query, query.params, serial=rollups)
    return _groups(rows, len(dims)), rollups


def _groups(rows: Sequence[Sequence[Any]], dims: int) -> list[Group]:
    """spans_statement's rows (bucket, *dims, n, first, last, step seconds) summed per
    group of the dimensions."""
    groups: dict[tuple[Any, ...], Group] = {}
    for row in rows:
        key = tuple(row[1 : 1 + dims])
        n, first, last, seconds = row[1 + dims :]
        step = timedelta(seconds=seconds)
        if key in groups:
            groups[key].add(int(n), first, last, step)
        else:
            groups[key] = Group(key, int(n), first, step, last, step)
    return [g for g in groups.values() if g.count > 0]


class BucketCounts(msgspec.Struct, frozen=True):
    """One time bucket (of one service, when grouped by service): counts per level,
    DEBUG first, FATAL last. A Struct: a day of minutes makes 1,440 of them, built four
    times faster than a frozen dataclass."""

    time: datetime
    service_name: str | None
    levels: tuple[int, int, int, int, int]


# A bucket's count per level, summed as float8: exact for any count below 2^53, and
# PostgreSQL's sum of a bigint is a numeric, built per bucket and level (the 1-minute
# histogram of a day at 10M rows has 7,200 of them: 12.2 ms that way, 10.6 this way).
# int4 would do as well until one cell passed 2^31.
_PER_LEVEL = sql.SQL(", ").join(
    sql.SQL("coalesce(sum(n::float8) FILTER (WHERE level = {}), 0)::bigint").format(
        sql.Literal(int(lv))
    )
    for lv in Level
)


async def count_buckets(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    f: CompiledFilter,
    interval: timedelta,
    *,
    by_service: bool,
    kept: KeptHours | None = None,
) -> tuple[list[BucketCounts], bool]:
    """Counts per time bucket (date_bin of `interval`, UTC), per level and optionally
    per service, over f's window, in bucket order; and whether rollups answered. Only
    buckets with entries are returned. `kept` as for count_groups."""
    start, end = _window(f)
    rollups = f.uses_only_rollup_dimensions
    dims = ("service_name", "level") if by_service else ("level",)
    if not rollups and kept is not None:
        kept_rows = await raw_rows(conn, tenant_id, f, dims, interval, kept)
        if kept_rows is not None:
            return _pivoted(kept_rows, interval, by_service=by_service), False
    spans = plan_spans(
        start,
        end,
        rollups=rollups,
        coarsest=max(step for step in (MINUTE, HOUR, DAY) if interval % step == timedelta(0)),
        minutes=_minutes_table(f, dims),
        compacted_until=await compacted_until(conn) if rollups else None,
    )
    if not spans:
        return [], rollups
    query = cells_statement(tenant_id, f, spans, dims, interval, split=split_now())
    # Pivoted here, one row per bucket: five times fewer rows to send and decode.
    keys = sql.SQL(", ").join(
        [sql.Identifier("bucket"), *(sql.Identifier(d) for d in dims if d != "level")]
    )
    statement = sql.SQL("SELECT {}, {} FROM ({}) AS spans GROUP BY {} ORDER BY {}").format(
        keys, _PER_LEVEL, query.query, keys, keys
    )
    rows = await fetch_counts(conn, statement, query.params, serial=rollups)
    if by_service:
        return [BucketCounts(r[0], r[1], tuple(r[2:])) for r in rows], rollups
    return [BucketCounts(r[0], None, tuple(r[1:])) for r in rows], rollups


# A raw count keeps its whole past hours only when it spans at least this many: fewer
# are cheap to count, and not worth the reads and writes of the store.
KEEP_FROM_HOURS = 3


async def raw_rows(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    f: CompiledFilter,
    dims: Sequence[Dimension],
    bucket: timedelta | None,
    kept: KeptHours,
) -> list[tuple[Any, ...]] | None:
    """A raw count over f's window as spans_statement's rows (sub-bucket, *dims, n,
    first, last, 0), with each whole past hour taken from `kept` while its fingerprint
    (the tenant's row count in that hour or day, from the rollups) holds, past spans (a
    closed day, an hour of today) from their word counts where they answer
    (shared/word_counts.py: one word searched), and the rest counted: the partial hours
    at the edges, the current hour, and the hours not kept or changed since. The
    sub-bucket is `bucket` when it is at most an hour (so that every row lies in one
    hour), else the hour. None when the window spans too few past hours, or for a bucket
    neither inside an hour nor whole hours (its rows would not lie in one hour)."""
    start, end = _window(f)
    first = ceil_to(start, HOUR)
    last = min(floor_to(end, HOUR), floor_to(datetime.now(UTC), HOUR))
    sub = bucket if bucket is not None and bucket <= HOUR else HOUR
    if bucket is not None and HOUR % bucket and bucket % HOUR:
        return None  # a bucket neither inside an hour nor whole hours (Loki's [97m])
    term = counted_term(f, dims, bucket)
    if not (kept.enabled or term) or last - first < KEEP_FROM_HOURS * HOUR:
        return None
    hours = [first + HOUR * i for i in range(int((last - first) / HOUR))]
    rows: list[tuple[Any, ...]] = []
    if term is not None:  # past spans from their word counts, where they answer
        # Per sub-bucket, as the rows counted below; a histogram of days per day.
        by = sub if bucket is not None and bucket % DAY else None
        rows, served = await word_rows(conn, tenant_id, f, term, dims, first, last, bucket=by)
        hours = [h for h in hours if not any(lo <= h < hi for lo, hi in served)]
    # Read before the rows: a row committed in between is then counted below but not in
    # the fingerprint kept with it, so the hour is counted again next time. The other
    # order could keep a count that misses that row under a fingerprint that has it.
    # Only over the hours the word counts left (often today's newest): a week's
    # fingerprints took 10-15 ms of a 70-90 ms count on this machine. And over the hours
    # holding the partial ones at the edges, in the same statement: not kept, but what
    # they hold says whether the count is worth parallel workers (below).
    edges = [(floor_to(lo, HOUR), ceil_to(hi, HOUR)) for lo, hi in ((start, first), (last, end))]
    ranges = [(lo, hi) for lo, hi in edges if lo < hi]
    fingerprints = await _hour_fingerprints(
        conn, tenant_id, [*ranges, (hours[0], hours[-1] + HOUR)] if hours else ranges
    )
    question = {"filter": asdict(replace(f, start=None, end=None)), "dims": list(dims), "sub": sub}
    keys = kept.keys_of(tenant_id, question, hours)
    missing: list[int] = []  # indexes into hours
    for i, found in enumerate(await kept.get(keys)):
        fingerprint = fingerprints.get(hours[i], 0)
        if found is not None and found[0] == fingerprint:
            rows.extend(found[1])
        elif fingerprint:  # an hour without rows has nothing to count or keep
            missing.append(i)
    pieces = [(start, first), *_runs([hours[i] for i in missing]), (last, end)]
    spans = [Span(Source.RAW, lo, hi) for lo, hi in pieces if lo < hi]
    if not spans:
        return rows
    query = spans_statement(tenant_id, f, spans, dims, sub, split=split_now())
    # The planner cannot tell how many hours a date_bin makes and assumes a group per
    # row: a parallel plan then looks as if every row came back from the workers, and
    # the count runs on one core (a word over 7 days of the busiest tenant: 2.6 s
    # against 1.6 s in parallel). Nor does it expect a tenant's few thousand matches to
    # be worth starting workers for, yet the first time a word is counted their pages
    # are read from the OS cache, which two processes do faster than one. So rows from
    # workers and their start are made free for this statement (the bench's word count
    # over 7 days, cold, p95 607-1,708 -> 476-600 ms; p50 within the noise), unless the
    # hours it reads hold too few rows to pay for starting them.
    counting = {hours[i] for i in missing}
    scanned = sum(
        _rows_in_hour(n)
        for hour, n in fingerprints.items()
        if hour in counting or any(lo <= hour < hi for lo, hi in ranges)
    )
    settings = _FREE_WORKERS if scanned >= ROWS_WORTH_WORKERS else _SERIAL
    counted = [
        tuple(row) for row in await _fetch_with_settings(conn, query.query, query.params, settings)
    ]
    per_hour: dict[datetime, list[tuple[Any, ...]]] = {hours[i]: [] for i in missing}
    for row in counted:
        kept_rows = per_hour.get(floor_to(row[0], HOUR))
        if kept_rows is not None:
            kept_rows.append(row)
    await kept.put({keys[i]: (fingerprints[hours[i]], per_hour[hours[i]]) for i in missing})
    return rows + counted


_FREE_WORKERS = {"parallel_tuple_cost": "0", "parallel_setup_cost": "0"}
# Fewer rows than this in the hours a raw count reads, and it runs without workers: their
# start (2-4 ms each on this machine) outweighed what they share. A small tenant's word
# histogram of a day, its two partial hours only (~1,200 rows): 8-9 ms in parallel, 0.7
# ms without; through the gateway 27.6-33.9 -> 16.6-20.2 ms.
ROWS_WORTH_WORKERS = 10_000


def _rows_in_hour(fingerprint: int) -> float:
    """An hour's rows from its fingerprint (_hour_fingerprints): inside a whole day, its
    share of the day's."""
    return fingerprint if fingerprint >= 0 else (-fingerprint - 1) / 24


def _runs(hours: Sequence[datetime]) -> list[tuple[datetime, datetime]]:
    """Consecutive hours joined into [lo, hi) ranges: one SELECT each."""
    runs: list[tuple[datetime, datetime]] = []
    for hour in hours:
        if runs and runs[-1][1] == hour:
            runs[-1] = (runs[-1][0], hour + HOUR)
        else:
            runs.append((hour, hour + HOUR))
    return runs


async def _hour_fingerprints(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    ranges: Sequence[tuple[datetime, datetime]],
) -> dict[datetime, int]:
    """Each hour of the [first, last) `ranges` (whole hours, apart) with the tenant's
    rows: its row count, from the rollups; or, inside a whole day the rollups hold as one
    cell, that day's count, negated and less one (an hour never has a negative count, so
    the two never match). Reading the day cells rather than 24 hour cells each makes this
    a few milliseconds over a week; a late entry then counts its whole day again, once."""
    if not ranges:
        return {}
    watermark = await compacted_until(conn)
    spans = [
        span
        for first, last in ranges
        for span in plan_spans(
            first, last, rollups=True, minutes=Source.LEVEL_MINUTE, compacted_until=watermark
        )
    ]
    query = spans_statement(tenant_id, CompiledFilter(), spans, (), HOUR)
    counts: dict[datetime, int] = {}
    # Without workers: 3.5 ms against 26-38 with them over a week at 10M rows.
    for cell, n, _, _, step in await fetch_counts(conn, query.query, query.params, serial=True):
        if step == DAY.total_seconds():
            for hour in range(24):
                counts[cell + HOUR * hour] = -int(n) - 1
        else:
            counts[cell] = counts.get(cell, 0) + int(n)
    return counts


_LEVEL_INDEX = {int(level): i for i, level in enumerate(Level)}


def _pivoted(
    rows: Sequence[Sequence[Any]], interval: timedelta, *, by_service: bool
) -> list[BucketCounts]:
    """raw_rows' rows (sub-bucket, [service,] level, n, ...) as count_buckets answers:
    one BucketCounts per bucket (and service), in order."""
    cells: dict[tuple[datetime, str | None], list[int]] = {}
    for row in rows:
        service = row[1] if by_service else None
        level = row[2] if by_service else row[1]
        cell = cells.setdefault((floor_to(row[0], interval), service), [0] * len(_LEVEL_INDEX))
        cell[_LEVEL_INDEX[level]] += int(row[3] if by_service else row[2])
    return [
        BucketCounts(time, service, tuple(levels))  # type: ignore[arg-type]
        for (time, service), levels in sorted(cells.items())
    ]


async def narrow(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    f: CompiledFilter,
    coarse: datetime,
    step: timedelta,
    *,
    newest: bool,
) -> tuple[datetime, datetime] | None:
    """Where exactly in [coarse, coarse + step), a day or hour the rollups say holds an
    entry matching `f`, its oldest (or newest) entry lies: the [lo, hi) of its minute
    within f's window, found by reading the next finer rollup table, rung by rung."""
    start, end = _window(f)
    lo, hi = max(start, coarse), min(end, coarse + step)
    agg = sql.SQL("max" if newest else "min")
    where = where_sql(tenant_id, replace(f, start=None, end=None))
    while step > MINUTE:
        finer = _FINER[step]
        in_range, range_params = range_sql(finer, floor_to(lo, finer.step), hi)
        cur = await conn.execute(
            sql.SQL("SELECT {}({}) FROM {} WHERE {} AND {}").format(
                agg,
                sql.Identifier(finer.column),
                sql.Identifier(finer.table),
                where.clause,
                in_range,
            ),
            [*where.params, *range_params],
            prepare=False,
        )
        row = await cur.fetchone()
        if row is None or row[0] is None:
            return None
        step = finer.step
        lo, hi = max(lo, row[0]), min(hi, row[0] + step)
    return lo, hi


async def exact_time(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    f: CompiledFilter,
    coarse: datetime,
    step: timedelta,
    *,
    newest: bool,
) -> datetime | None:
    """The exact time of the oldest (or newest) entry matching `f` within
    [coarse, coarse + step), a minute, hour or day the rollups (or, for a filter they
    cannot answer, the word counts' hours) say holds one: the raw read that settles it
    spans one minute (or that hour)."""
    if f.uses_only_rollup_dimensions:
        found = await narrow(conn, tenant_id, f, coarse, step, newest=newest)
    else:
        start, end = _window(f)
        found = max(start, coarse), min(end, coarse + step)
    if found is None:
        return None
    where = where_sql(tenant_id, replace(f, start=found[0], end=found[1]))
    cur = await conn.execute(
        sql.SQL('SELECT {}("timestamp") FROM tenant_log_entries WHERE {}').format(
            sql.SQL("max" if newest else "min"), where.clause
        ),
        where.params,
        prepare=False,
    )
    row = await cur.fetchone()
    return row[0] if row else None


@dataclass(frozen=True, slots=True)
class Usage:
    """Rows and (approximate stored) bytes of one tenant, all time, from the rollups."""

    tenant_id: uuid.UUID
    rows: int
    bytes: int


# All time = the daily cells (every minute before the watermark) + log_counts from it on.
_USAGE_SOURCES = """
    SELECT tenant_id, count, bytes FROM log_counts_daily
    UNION ALL
    SELECT tenant_id, count, bytes FROM log_counts
    WHERE minute >= (SELECT compacted_until FROM rollup_watermark)
"""


async def tenant_usage(conn: AsyncConnection[Any], tenant_id: uuid.UUID) -> Usage:
    cur = await conn.execute(
        "SELECT coalesce(sum(count), 0), coalesce(sum(bytes), 0) "
        f"FROM ({_USAGE_SOURCES}) AS cells WHERE tenant_id = %s",
        (tenant_id,),
        prepare=False,
    )
    row = await cur.fetchone()
    assert row is not None
    return Usage(tenant_id, int(row[0]), int(row[1]))


async def all_tenants_usage(conn: AsyncConnection[Any]) -> list[Usage]:
    """Every tenant's usage, largest first: for operators only (it crosses tenants, so it
    must run outside a tenant-scoped transaction, whose row-level security hides the rest)."""
    cur = await conn.execute(
        f"SELECT tenant_id, sum(count), sum(bytes) FROM ({_USAGE_SOURCES}) AS cells "
        "GROUP BY tenant_id HAVING sum(count) > 0 ORDER BY 3 DESC, 1",
        prepare=False,
    )
    return [Usage(r[0], int(r[1]), int(r[2])) for r in await cur.fetchall()]


@dataclass(frozen=True, slots=True)
class PhysicalSize:
    """Bytes on disk of every partition of log_entries (heap with TOAST, and indexes)."""

    table_bytes: int
    index_bytes: int


async def physical_size(conn: AsyncConnection[Any]) -> PhysicalSize:
    cur = await conn.execute(
        "SELECT coalesce(sum(pg_table_size(relid)), 0), coalesce(sum(pg_indexes_size(relid)), 0) "
        "FROM pg_partition_tree('log_entries') WHERE isleaf",
        prepare=False,
    )
    row = await cur.fetchone()
    assert row is not None
    return PhysicalSize(int(row[0]), int(row[1]))


@dataclass(frozen=True, slots=True)
class Quota:
    bytes: int
    # "tenant": the tenant's own max_size_gb; "all_tenants": LOG_MAX_SIZE_GB, one limit
    # that all tenants share (the janitor enforces it over their sum).
    scope: Literal["tenant", "all_tenants"]


async def tenant_quota(
    conn: AsyncConnection[Any], tenant_id: uuid.UUID, default_gb: float
) -> Quota:
    """The size limit that holds the tenant: its retention policy's max_size_gb when set,
    else LOG_MAX_SIZE_GB (shared with every tenant). The one place a per-tenant override
    is read (extend it here)."""
    cur = await conn.execute(
        "SELECT max_size_gb FROM log_retention_policies WHERE tenant_id = %s",
        (tenant_id,),
        prepare=False,
    )
    row = await cur.fetchone()
    if row and row[0] is not None:
        return Quota(int(float(row[0]) * 1024**3), "tenant")
    return Quota(int(default_gb * 1024**3), "all_tenants")
