"""Loki's /index/volume and /index/volume_range, answered from the rollups.

Loki's volume is the bytes of the streams a selector matches, summed into series: by
default the labels the selector names (`{service_name="api", level=~".+"}` gives one
series per service and level), or only `targetLabels` (each added as a `=~".+"`
matcher), or with `aggregateBy=labels` one series per label name (`{level: ""}`).
Each bucket keeps its `limit` largest series (pkg/storage/stores/index/seriesvolume),
the answer is a vector when every series has one sample, else a matrix
(pkg/querier/queryrange/volume.go), series largest first.

Ours are the `bytes` of log_counts and its hourly and daily sums (what the writer counts
per entry, as GET /api/v1/logs/storage reports). The rollups keep service_name, level
and environment, so those are the only labels a volume selector or target may name
(host, source and metadata are refused: they would need a scan of the rows). The
window is widened to whole minutes, the rollups' grain, as Loki counts whole chunks.
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection, sql

from services.gateway.loki.compile import Selection, compile_log_query, level_label
from services.gateway.loki.log_query import resolve_services
from services.gateway.loki.logql import LogQLError, LogQuery, parse
from services.gateway.loki.read_params import Window, seconds
from services.gateway.loki.responses import sample, timestamp
from shared import rollups
from shared.filters import CompiledFilter, where_sql

# Loki's label → the rollup column that holds it.
VOLUME_LABELS = {
    "service_name": "service_name",
    "level": "level",
    "detected_level": "level",
    "environment": "environment",
}
# Stream labels the rollups do not keep.
_NOT_IN_ROLLUPS = ("host", "source")
DEFAULT_LIMIT = 100  # seriesvolume.DefaultLimit
MAX_SERIES = 1000  # Loki's volume_max_series default
MATCH_ANY = "{}"
_EPOCH = sql.SQL("TIMESTAMPTZ '1970-01-01 00:00:00+00'")  # Loki aligns buckets to the epoch


@dataclass(frozen=True, slots=True)
class VolumeQuery:
    selection: Selection
    # Loki's labels to aggregate into (targetLabels, else the selector's), in order;
    # empty with `include_all`: the selector was `{}` and no targets were given.
    labels: tuple[str, ...]
    include_all: bool
    by_series: bool
    limit: int
    nothing: bool = False


def _refuse_label(name: str) -> None:
    if name in _NOT_IN_ROLLUPS or name not in VOLUME_LABELS:
        raise LogQLError(
            f"the volume endpoints count the rollups, which keep service_name, level and "
            f"environment: {name!r} cannot be selected or targeted here"
        )


def volume_query(
    text: str | None,
    target_labels: str | None,
    aggregate_by: str | None,
    limit: str | None,
    w: Window,
) -> VolumeQuery:
    """The request's parameters, checked as Loki's loghttp.ParseVolume*Query does."""
    count = _limit(limit)
    mode = (aggregate_by or "series").strip()
    if mode not in ("series", "labels"):
        raise LogQLError("invalid aggregation option")
    targets = tuple(dict.fromkeys(t.strip() for t in (target_labels or "").split(",") if t.strip()))
    query = (text or "").strip()
    if not query:
        raise LogQLError("parse error : syntax error: unexpected $end: the query is required")
    if query.replace(" ", "") == MATCH_ANY:
        selection = Selection(CompiledFilter(start=w.start, end=w.end))
        named: tuple[str, ...] = ()
    else:
        parsed = parse(query)
        if not isinstance(parsed, LogQuery) or parsed.line_filters or parsed.label_filters:
            raise LogQLError('expected a stream selector such as {service_name="api"}')
        for m in parsed.matchers:
            _refuse_label(m.name)
        selection = compile_log_query(parsed, w.start, w.end)
        named = tuple(dict.fromkeys(m.name for m in parsed.matchers))
    for name in targets:
        if name in _NOT_IN_ROLLUPS:
            _refuse_label(name)
    labels = targets or named
    return VolumeQuery(
        selection=selection,
        labels=labels,
        include_all=not labels,
        by_series=mode == "series",
        limit=count,
        # A target label we never have: Loki adds `label=~".+"`, which nothing matches.
        nothing=any(name not in VOLUME_LABELS for name in targets),
    )


def _limit(text: str | None) -> int:
    if text is None or not text.strip():
        return DEFAULT_LIMIT
    try:
        value = int(text.strip())
    except ValueError:
        raise LogQLError(f'invalid parameter "limit": cannot parse "{text[:32]}"') from None
    if value == 0:
        return DEFAULT_LIMIT
    if value < 0:
        raise LogQLError("limit must be a positive value")
    return value


def volume_step(step: timedelta) -> timedelta:
    """The step in whole minutes (at least one), the rollups' grain."""
    return rollups.MINUTE * max(1, math.ceil(step / rollups.MINUTE))


def _columns(q: VolumeQuery) -> tuple[str, ...]:
    if q.include_all:
        return ("service_name", "level", "environment")
    wanted = {VOLUME_LABELS[n] for n in q.labels if n in VOLUME_LABELS}
    return tuple(c for c in ("service_name", "level", "environment") if c in wanted)


def _minutes_table(f: CompiledFilter, columns: Sequence[str]) -> rollups.Source:
    whole = not f.services and f.environment is None
    return (
        rollups.Source.LEVEL_MINUTE
        if whole and set(columns) <= {"level"}
        else rollups.Source.MINUTE
    )


async def _bytes_rows(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    f: CompiledFilter,
    columns: tuple[str, ...],
    step: timedelta | None,
    *,
    need_environment: bool,
) -> list[tuple[Any, ...]]:
    """(bucket or NULL, *columns, bytes) over f's window widened to whole minutes, from
    the rollup tables only."""
    assert f.start is not None and f.end is not None
    lo, hi = rollups.floor_to(f.start, rollups.MINUTE), rollups.ceil_to(f.end, rollups.MINUTE)
    coarsest = rollups.DAY
    if step is not None:
        coarsest = max(
            s for s in (rollups.MINUTE, rollups.HOUR, rollups.DAY) if step % s == timedelta(0)
        )
    spans = rollups.plan_spans(
        lo,
        hi,
        rollups=True,
        coarsest=coarsest,
        minutes=_minutes_table(f, columns),
        compacted_until=await rollups.compacted_until(conn),
    )
    where = where_sql(tenant_id, replace(f, start=None, end=None))
    parts: list[sql.Composable] = []
    params: list[Any] = []
    for span in spans:
        assert span.source is not rollups.Source.RAW  # the window is whole minutes
        time_col = sql.Identifier(span.source.column)
        bucket: sql.Composable = sql.SQL("NULL::timestamptz")
        if step is not None:
            bucket = sql.SQL("date_bin(%s::interval, {}, {})").format(time_col, _EPOCH)
            params.append(step)
        extra = sql.SQL(" AND environment <> ''") if need_environment else sql.SQL("")
        in_range, range_params = rollups.range_sql(span.source, span.start, span.end)
        parts.append(
            sql.SQL("SELECT {} AS bucket, {} bytes FROM {} WHERE {} AND {}{}").format(
                bucket,
                sql.SQL("").join(sql.SQL("{}, ").format(sql.Identifier(c)) for c in columns),
                sql.Identifier(span.source.table),
                where.clause,
                in_range,
                extra,
            )
        )
        params += [*where.params, *range_params]
    if not parts:
        return []
    keys = sql.SQL(", ").join([sql.Identifier("bucket"), *(sql.Identifier(c) for c in columns)])
    statement = sql.SQL("SELECT {}, sum(bytes) FROM ({}) AS cells GROUP BY {} ORDER BY 1").format(
        keys, sql.SQL(" UNION ALL ").join(sql.SQL("({})").format(p) for p in parts), keys
    )
    return await rollups.fetch_counts(conn, statement, params, serial=True)


Labels = tuple[tuple[str, str], ...]


def _stream(columns: tuple[str, ...], values: Sequence[Any]) -> dict[str, str]:
    """The stream labels of a rollup cell (Loki's names; no environment when empty)."""
    out: dict[str, str] = {}
    for column, value in zip(columns, values, strict=True):
        if value is None or value == "":
            continue
        out[column] = level_label(int(value)) if column == "level" else str(value)
    return out


def _names(q: VolumeQuery, stream: dict[str, str]) -> list[Labels]:
    """The series a cell's bytes go to: one (by series) or one per label (by labels)."""
    if q.include_all:
        present = dict(stream)
    else:
        present = {
            n: stream[VOLUME_LABELS[n]]
            for n in q.labels
            if n in VOLUME_LABELS and VOLUME_LABELS[n] in stream
        }
    if q.by_series:
        return [tuple(sorted(present.items()))]
    return [((name, ""),) for name in sorted(present)]


def series_name(labels: Labels) -> str:
    """Loki's name of a series, `{a="x", b="y"}`: the tie-breaker of its ordering."""
    return "{" + ", ".join(f'{k}="{v}"' for k, v in labels) + "}"


async def volumes(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    q: VolumeQuery,
    step: timedelta | None,
) -> dict[datetime | None, dict[Labels, int]]:
    """Bytes per bucket start (None for the instant volume) and series, each bucket cut
    to its `limit` largest series as Loki's accumulator does."""
    sel = await resolve_services(conn, tenant_id, q.selection)
    if q.nothing or sel.empty or sel.where.is_empty_range:
        return {}
    columns = _columns(q)
    # A target environment is `environment=~".+"` (Loki): cells without one are left out.
    need_environment = "environment" in q.labels
    rows = await _bytes_rows(
        conn, tenant_id, sel.where, columns, step, need_environment=need_environment
    )
    per_bucket: dict[datetime | None, dict[Labels, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        size = int(row[-1])
        if size <= 0:
            continue
        stream = _stream(columns, row[1:-1])
        for labels in _names(q, stream):
            per_bucket[row[0]][labels] += size
    out: dict[datetime | None, dict[Labels, int]] = {}
    for bucket, found in per_bucket.items():
        if len(found) > MAX_SERIES:
            raise LogQLError(
                f"the query hit the max number of series limit (limit: {MAX_SERIES} series)"
            )
        ranked = sorted(found.items(), key=lambda kv: (-kv[1], series_name(kv[0])))
        out[bucket] = dict(ranked[: q.limit])
    return out


def _ms(moment: datetime) -> float:
    """Seconds since the epoch, cut to the millisecond (Loki's samples are in ms)."""
    return math.floor(round(seconds(moment) * 1e6) / 1000) / 1000


def volume_body(
    found: dict[datetime | None, dict[Labels, int]],
    end: datetime,
    step: timedelta | None,
) -> dict[str, Any]:
    """Loki's answer (`data`): each bucket's sample at its end, 1 ms before the next
    bucket (util.ForInterval with endTimeInclusive), the last one at `end`."""
    samples: dict[Labels, list[tuple[float, int]]] = defaultdict(list)
    for bucket, series in found.items():
        if bucket is None or step is None:
            at = end
        else:
            bucket_end = bucket.astimezone(UTC) + step
            at = end if bucket_end >= end else bucket_end - timedelta(milliseconds=1)
        for labels, size in series.items():
            samples[labels].append((_ms(at), size))
    matrix = any(len(points) > 1 for points in samples.values())
    ordered = []
    for labels, points in samples.items():
        points.sort()
        ordered.append((labels, points))
    ordered.sort(key=lambda lp: (-lp[1][0][1], series_name(lp[0])))
    result: list[dict[str, Any]] = []
    for labels, points in ordered:
        metric = dict(labels)
        if matrix:
            values = [[timestamp(t), sample(float(v))] for t, v in points]
            result.append({"metric": metric, "values": values})
        else:
            t, v = points[0]
            result.append({"metric": metric, "value": [timestamp(t), sample(float(v))]})
    return {"resultType": "matrix" if matrix else "vector", "result": result}
