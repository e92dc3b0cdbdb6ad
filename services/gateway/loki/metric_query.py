"""Metric queries: `count_over_time`, `rate`, `bytes_over_time`, `bytes_rate`, under
`sum`/`count` by/without and `topk`/`bottomk`, counted where the stats API counts.

Counts come from the rollups whenever the filter and the grouping allow it (service,
level, environment; shared/rollups.py cuts the window into days, hours, minutes and
raw edges exactly as POST /api/v1/logs/aggregate does), else from the rows in the
window: as there, a single word's whole past hours from the janitor's word counts, and
the other whole past hours kept from an earlier count while they hold (when the
buckets nest in hours). Bytes (the length of each line, as Loki counts them) always
come from the rows.

Range queries are evaluated on buckets of the range's width (rounded up to whole
minutes, the rollups' grain), aligned to UTC like the aggregate API's: the sample at
time t counts the entries in [t - range, t). Buckets without entries have no sample,
as in Loki. An instant query counts [time - range, time) exactly.
"""

from __future__ import annotations

import heapq
import math
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection, sql

from services.gateway.loki.compile import (
    LEVEL_LABELS,
    STREAM_LABELS,
    compile_log_query,
    level_label,
)
from services.gateway.loki.log_query import resolve_services
from services.gateway.loki.logql import (
    Constant,
    LogQLError,
    Metric,
    RangeAggregation,
    TopK,
    VectorAggregation,
)
from services.gateway.loki.read_params import seconds
from shared import rollups
from shared.filters import CompiledFilter, where_sql
from shared.kept_hours import KeptHours
from shared.open_day_search import split_now

MAX_POINTS = 11_000  # per series, as Loki
MAX_SERIES = 500  # per query, as Loki's max_query_series
_ORIGIN = sql.SQL("TIMESTAMPTZ '2000-01-01 00:00:00+00'")

Labels = tuple[tuple[str, str], ...]
Series = dict[Labels, dict[float, float]]


@dataclass(frozen=True, slots=True)
class Plan:
    """A metric query reduced to one counting statement and the steps after it."""

    leaf: RangeAggregation
    parents: tuple[VectorAggregation | TopK, ...]  # innermost first
    labels: tuple[str, ...]  # the labels the leaf's series carry


def plan(metric: Metric) -> Plan:
    chain: list[VectorAggregation | TopK] = []
    node = metric
    while not isinstance(node, RangeAggregation):
        if isinstance(node, Constant):
            raise LogQLError("a constant cannot be aggregated")
        chain.append(node)
        node = node.inner
    parents = tuple(reversed(chain))
    first = parents[0] if parents else None
    if isinstance(first, VectorAggregation) and first.op == "sum":
        # sum by (x) over counts is the count by x: group in SQL, where the rollups can.
        labels = _grouped(first)
    else:
        labels = STREAM_LABELS
    return Plan(node, parents, labels)


def _grouped(agg: VectorAggregation) -> tuple[str, ...]:
    g = agg.grouping
    if g is None:
        return ()
    for name in g.labels:
        if name not in STREAM_LABELS and name not in LEVEL_LABELS:
            raise LogQLError(
                f"grouping by {name} is not supported: group by {', '.join(STREAM_LABELS)} "
                "or detected_level"
            )
    if g.without:
        dropped = set(g.labels)
        if dropped & set(LEVEL_LABELS):
            dropped |= set(LEVEL_LABELS)
        return tuple(n for n in STREAM_LABELS if n not in dropped)
    return tuple(dict.fromkeys(g.labels))


def _columns(labels: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys("level" if n in LEVEL_LABELS else n for n in labels))


@dataclass(frozen=True, slots=True)
class Counted:
    """The leaf's values: per bucket start (None for an instant query) and label values."""

    rows: list[tuple[datetime | None, dict[str, Any], float]]
    width: timedelta
    used_rollups: bool


def _minutes_table(f: CompiledFilter, columns: Sequence[str]) -> rollups.Source:
    # The same choice as rollups.count_buckets: the per-level minutes when they suffice.
    whole = not f.services and f.environment is None
    if whole and "service_name" not in columns and "environment" not in columns:
        return rollups.Source.LEVEL_MINUTE
    return rollups.Source.MINUTE


async def _counts(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    f: CompiledFilter,
    columns: tuple[str, ...],
    bucket: timedelta | None,
    kept: KeptHours | None = None,
) -> tuple[list[tuple[Any, ...]], bool]:
    assert f.start is not None and f.end is not None
    use = f.uses_only_rollup_dimensions and rollups.ROLLUP_DIMENSIONS.issuperset(columns)
    if not use and kept is not None:
        # As /stats and /aggregate count: whole past hours kept, a word from its counts.
        raw = await rollups.raw_rows(conn, tenant_id, f, columns, bucket, kept)
        if raw is not None:
            return _summed(raw, len(columns), bucket), False
    coarsest = rollups.DAY
    if bucket is not None:
        coarsest = max(
            s for s in (rollups.MINUTE, rollups.HOUR, rollups.DAY) if bucket % s == timedelta(0)
        )
    spans = rollups.plan_spans(
        f.start,
        f.end,
        rollups=use,
        coarsest=coarsest,
        minutes=_minutes_table(f, columns),
        compacted_until=await rollups.compacted_until(conn) if use else None,
    )
    if not spans:
        return [], use
    inner = rollups.cells_statement(tenant_id, f, spans, columns, bucket, split=split_now())
    keys = sql.SQL(", ").join([sql.Identifier("bucket"), *(sql.Identifier(c) for c in columns)])
    # Summed as float8, exact below 2^53: as rollups.count_buckets does, for its reason.
    statement = sql.SQL(
        "SELECT {}, sum(n::float8)::bigint FROM ({}) AS spans GROUP BY {} ORDER BY 1"
    ).format(keys, inner.query, keys)
    return await rollups.fetch_counts(conn, statement, inner.params, serial=use), use


def _summed(
    rows: Sequence[Sequence[Any]], dims: int, bucket: timedelta | None
) -> list[tuple[Any, ...]]:
    """raw_rows' rows (sub-bucket, *dims, n, first, last, step) as _counts' (bucket,
    *dims, n), in bucket order: sub-buckets are hours or parts of one, inside a bucket."""
    sums: dict[tuple[Any, ...], int] = {}
    for row in rows:
        at = rollups.floor_to(row[0], bucket) if bucket is not None else None
        key = (at, *row[1 : 1 + dims])
        sums[key] = sums.get(key, 0) + int(row[1 + dims])
    if bucket is None:
        return [(*key, n) for key, n in sums.items()]
    return [(*key, n) for key, n in sorted(sums.items(), key=lambda item: item[0][0])]


async def _bytes(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    f: CompiledFilter,
    columns: tuple[str, ...],
    bucket: timedelta | None,
) -> list[tuple[Any, ...]]:
    where = where_sql(tenant_id, f)
    bucket_expr: sql.Composable = sql.SQL("NULL::timestamptz")
    params: list[Any] = []
    if bucket is not None:
        bucket_expr = sql.SQL('date_bin(%s::interval, "timestamp", {})').format(_ORIGIN)
        params.append(bucket)
    columns_sql = [
        sql.SQL("{} AS bucket").format(bucket_expr),
        *(sql.Identifier(c) for c in columns),
    ]
    statement = sql.SQL(
        "SELECT {}, sum(octet_length(message)) FROM tenant_log_entries WHERE {} GROUP BY {} "
        "ORDER BY 1"
    ).format(
        sql.SQL(", ").join(columns_sql),
        where.clause,
        sql.SQL(", ").join(sql.SQL(str(i)) for i in range(1, len(columns_sql) + 1)),
    )
    cur = await conn.execute(statement, [*params, *where.params], prepare=False)
    return list(await cur.fetchall())


def _labels(columns: tuple[str, ...], wanted: tuple[str, ...], values: Sequence[Any]) -> Labels:
    by_column = dict(zip(columns, values, strict=True))
    out: dict[str, str] = {}
    for name in wanted:
        value = by_column["level" if name in LEVEL_LABELS else name]
        if value is None:
            continue  # an absent label (no environment), as in Loki
        out[name] = level_label(int(value)) if name in LEVEL_LABELS else str(value)
    return tuple(sorted(out.items()))


async def evaluate_leaf(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    p: Plan,
    start: datetime,
    end: datetime,
    bucket: timedelta | None,
    kept: KeptHours | None = None,
) -> Series:
    """The leaf over [start, end): per bucket (sample at its end) or one sample at `end`.
    `kept`: where a count from rows keeps its whole past hours (shared/kept_hours.py)."""
    sel = compile_log_query(p.leaf.query, start, end)
    sel = await resolve_services(conn, tenant_id, sel)
    if sel.empty or start >= end:
        return {}
    columns = _columns(p.labels)
    fn = p.leaf.function
    if fn in ("count_over_time", "rate"):
        rows, _ = await _counts(conn, tenant_id, sel.where, columns, bucket, kept)
    else:
        rows = await _bytes(conn, tenant_id, sel.where, columns, bucket)
    width = bucket or p.leaf.range
    per_second = fn in ("rate", "bytes_rate")
    series: Series = defaultdict(dict)
    for row in rows:
        at = row[0] + width if bucket is not None else end
        value = float(row[-1])
        if value == 0:
            continue
        labels = _labels(columns, p.labels, row[1:-1])
        t = seconds(at)
        series[labels][t] = series[labels].get(t, 0.0) + (
            value / width.total_seconds() if per_second else value
        )
    return dict(series)


def apply(parents: tuple[VectorAggregation | TopK, ...], series: Series, pushed: bool) -> Series:
    """The aggregations above the leaf, innermost first. `pushed`: the innermost sum was
    already done by the counting statement's grouping."""
    for i, node in enumerate(parents):
        if i == 0 and pushed:
            continue
        series = (
            _aggregate(node, series) if isinstance(node, VectorAggregation) else _topk(node, series)
        )
    if len(series) > MAX_SERIES:
        raise LogQLError(f"maximum of series ({MAX_SERIES}) reached for a single query")
    return series


def _aggregate(node: VectorAggregation, series: Series) -> Series:
    g = node.grouping
    out: Series = defaultdict(dict)
    for labels, points in series.items():
        if g is None:
            key: Labels = ()
        elif g.without:
            key = tuple((n, v) for n, v in labels if n not in g.labels)
        else:
            key = tuple((n, v) for n, v in labels if n in g.labels)
        target = out[key]
        for t, value in points.items():
            target[t] = target.get(t, 0.0) + (value if node.op == "sum" else 1.0)
    return dict(out)


def _topk(node: TopK, series: Series) -> Series:
    times: dict[float, list[tuple[float, Labels]]] = defaultdict(list)
    for labels, points in series.items():
        for t, value in points.items():
            times[t].append((value, labels))
    out: Series = defaultdict(dict)
    pick = heapq.nlargest if node.op == "topk" else heapq.nsmallest
    for t, candidates in times.items():
        for value, labels in pick(node.k, candidates, key=lambda c: c[0]):
            out[labels][t] = value
    return dict(out)


def is_pushed(p: Plan) -> bool:
    first = p.parents[0] if p.parents else None
    return isinstance(first, VectorAggregation) and first.op == "sum"


@dataclass(frozen=True, slots=True)
class Buckets:
    start: datetime  # the first bucket's start
    end: datetime  # the last bucket's end
    width: timedelta
    every: timedelta  # the distance between samples kept (a multiple of width)


def buckets(start: datetime, end: datetime, width: timedelta, step: timedelta) -> Buckets | None:
    """Samples at every multiple of `width` (rounded up to a minute) in [start, end], or
    of `step` when it is a wider multiple of that."""
    minutes = max(1, math.ceil(width / rollups.MINUTE))
    w = rollups.MINUTE * minutes
    every = step if step > w and step % w == timedelta(0) else w
    first = rollups.ceil_to(start, w)
    last = rollups.floor_to(end, w)
    if last < first:
        return None
    points = int((last - first) / every) + 1
    if points > MAX_POINTS:
        raise LogQLError(
            f"exceeded maximum resolution of {MAX_POINTS} points per timeseries. Try "
            "increasing the value of the step parameter or the range"
        )
    return Buckets(first - w, last, w, every)


async def range_series(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    metric: Metric,
    start: datetime,
    end: datetime,
    step: timedelta,
    kept: KeptHours | None = None,
) -> Series:
    p = plan(metric)
    b = buckets(start, end, p.leaf.range, step)
    if b is None:
        return {}
    leaf = await evaluate_leaf(conn, tenant_id, p, b.start, b.end, b.width, kept)
    if b.every > b.width:
        leaf = {labels: _thin(points, b.every) for labels, points in leaf.items()}
    return apply(p.parents, leaf, is_pushed(p))


def _thin(points: dict[float, float], every: timedelta) -> dict[float, float]:
    """Only the samples on the step's grid: Loki evaluates at every step, each sample
    counting the range before it; a step wider than the range skips buckets."""
    seconds_each = every.total_seconds()
    return {t: v for t, v in points.items() if t % seconds_each == 0}


async def instant_series(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    metric: Metric,
    at: datetime,
    kept: KeptHours | None = None,
) -> Series:
    p = plan(metric)
    leaf = await evaluate_leaf(conn, tenant_id, p, at - p.leaf.range, at, None, kept)
    return apply(p.parents, leaf, is_pushed(p))


def constant_points(value: float, start: datetime, end: datetime, step: timedelta) -> list[float]:
    count = int((end - start) / step) + 1
    if count > MAX_POINTS:
        raise LogQLError(
            f"exceeded maximum resolution of {MAX_POINTS} points per timeseries. Try "
            "increasing the value of the step parameter"
        )
    return [seconds(start + step * i) for i in range(count)]
