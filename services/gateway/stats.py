"""Counting endpoints: stats, time-bucketed aggregates, the services list, storage use.

GET /api/v1/logs/stats and /services take the filters of GET /api/v1/logs as query
parameters; POST /api/v1/logs/aggregate takes them in the body with `interval` (and
optionally `group_by`). Counts come from the rollups whenever the filter only names
service, level and environment (`source: "rollup"`), else from the rows in the range
(`source: "raw"`); both give the same numbers, exact for any start and end.

Windows: stats and aggregate without start_time cover the 24 hours before end_time (or
now); services without start_time cover LOG_RETENTION_DAYS. Without end_time the window
is open: entries dated ahead of the clock (up to INGEST_MAX_FUTURE_MINUTES) count too.
Every answer goes through the query cache (`X-Cache` header; `Cache-Control: no-cache`
asks for a fresh one).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import JSONBody, Parameter
from psycopg import AsyncConnection

from services.gateway.auth import OPENAPI_SECURITY, Caller, provide_caller
from services.gateway.query_guard import QueryGuard
from services.gateway.query_params import provide_filter
from shared import rollups
from shared.cache import QueryCache, filter_key, range_is_closed
from shared.errors import FieldError, Forbidden, ValidationFailed
from shared.filters import CompiledFilter, LogFilter, compile_filter
from shared.model import LEVEL_NAMES, Level
from shared.settings import Settings

STATS_WINDOW = timedelta(hours=24)
INTERVALS = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "1d": timedelta(days=1),
}
Interval = Literal["1m", "5m", "15m", "1h", "6h", "1d"]
# 14 days of minutes: a larger histogram is not readable and costs as much as a page scan.
MAX_BUCKETS = 20_160
Source = Literal["rollup", "raw"]

_encoder = msgspec.json.Encoder()


class StatsOut(msgspec.Struct):
    """Counts of the entries matching the filter in [start_time, end_time).

    `by_level` always lists the five levels; `by_service` the services with entries.
    `first_timestamp`/`last_timestamp` are the oldest and newest matching entries (null
    when none). `end_time` null: the window is open.
    """

    total_count: int
    by_level: dict[str, int]
    by_service: dict[str, int]
    first_timestamp: datetime | None
    last_timestamp: datetime | None
    start_time: datetime
    end_time: datetime | None
    source: Source


class Bucket(msgspec.Struct, omit_defaults=True):
    """Entries in [time, time + interval): in total and per level (all five listed)."""

    time: datetime
    count: int
    by_level: dict[str, int]
    service_name: str | None = None


class AggregateOut(msgspec.Struct):
    """Buckets aligned to UTC (1d at midnight, 6h at 00/06/12/18 h), oldest first.

    Without `group_by` every bucket of the window is listed, empty ones with zeros;
    with `group_by: "service"` one bucket per service and interval that has entries.
    The first and last buckets count only the part inside the window.
    """

    interval: Interval
    group_by: Literal["service"] | None
    start_time: datetime
    end_time: datetime | None
    source: Source
    buckets: list[Bucket]


class ServiceOut(msgspec.Struct):
    """A service with entries in the window: how many, and the UTC minute of its newest."""

    service_name: str
    count: int
    last_seen: datetime


class ServicesOut(msgspec.Struct):
    services: list[ServiceOut]
    start_time: datetime
    end_time: datetime | None
    source: Source


class TenantUsageOut(msgspec.Struct):
    tenant_id: uuid.UUID
    rows: int
    bytes: int


class AllTenantsOut(msgspec.Struct):
    """Every tenant, and the disk used by log_entries (all partitions, with indexes)."""

    tenants: list[TenantUsageOut]
    rows: int
    bytes: int
    table_bytes: int
    index_bytes: int
    total_bytes: int
    bytes_per_row: float | None


class StorageOut(msgspec.Struct):
    """The caller's tenant: rows stored and their size (text, JSON and fixed columns, as
    the writer counts it; on disk with indexes it is more, see `all_tenants`), against
    its quota (its retention policy's max_size_gb, else LOG_MAX_SIZE_GB).
    `all_tenants` only for an admin caller that asks (`?all_tenants=true`)."""

    tenant_id: uuid.UUID
    rows: int
    bytes: int
    quota_bytes: int
    quota_used: float
    all_tenants: AllTenantsOut | None = None


class AggregateBody(LogFilter, kw_only=True, forbid_unknown_fields=True):
    """The filters of POST /api/v1/logs/query, plus the bucket width and grouping.

    `tenant_id` may be sent (as in the seed's query shape) but must be the caller's.
    """

    interval: Interval = "1h"
    group_by: Literal["service"] | None = None
    tenant_id: uuid.UUID | None = None

    def log_filter(self, caller_tenant: uuid.UUID) -> LogFilter:
        if self.tenant_id is not None and self.tenant_id != caller_tenant:
            raise Forbidden("tenant_id in the body is not the caller's tenant (omit it)")
        return LogFilter(**{name: getattr(self, name) for name in LogFilter.__struct_fields__})


@dataclass(frozen=True, slots=True)
class Window:
    """A filter with its window settled: `counted` has a start and a finite end for
    counting; `requested_end` is the end as asked (None: open)."""

    raw: LogFilter
    compiled: CompiledFilter
    counted: CompiledFilter
    requested_end: datetime | None
    now: datetime

    @classmethod
    def of(cls, raw: LogFilter, settings: Settings, default: timedelta) -> Window:
        now = datetime.now(UTC)
        compiled = compile_filter(raw, now)
        windowed = compiled.with_default_window(default, now)
        # Nothing can be stored dated later than this: an open end counts up to it.
        latest = now + timedelta(minutes=settings.ingest_max_future_minutes) + rollups.MINUTE
        counted = replace(windowed, end=windowed.end or max(latest, windowed.start or latest))
        return cls(raw, compiled, counted, compiled.end, now)

    @property
    def start(self) -> datetime:
        assert self.counted.start is not None
        return self.counted.start

    def cache_key(self, **extra: Any) -> dict[str, Any]:
        return {"filter": filter_key(self.raw, self.compiled), **extra}


def _source(used_rollups: bool) -> Source:
    return "rollup" if used_rollups else "raw"


def _levels(counts: dict[int, int]) -> dict[str, int]:
    return {name: counts.get(int(Level[name]), 0) for name in LEVEL_NAMES}


async def _answer(
    request: Request[Any, Any, Any],
    caller: Caller,
    kind: str,
    key: dict[str, Any],
    closed: bool,
    compute: Callable[[], Awaitable[bytes]],
) -> Response[bytes]:
    cache: QueryCache | None = request.app.state.get("query_cache")
    if cache is None:
        return Response(await compute(), media_type="application/json")
    answer = await cache.get_or_compute(
        caller.tenant_id,
        kind,
        key,
        closed=closed,
        compute=compute,
        bypass="no-cache" in request.headers.get("cache-control", "").lower(),
    )
    return Response(
        answer.body, media_type="application/json", headers={"X-Cache": str(answer.status)}
    )


def _closed(request: Request[Any, Any, Any], w: Window) -> bool:
    cache: QueryCache | None = request.app.state.get("query_cache")
    return cache is not None and range_is_closed(cache, w.raw, w.compiled, w.now)


async def _edge(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    f: CompiledFilter,
    groups: list[rollups.Group],
    *,
    newest: bool,
) -> datetime | None:
    """The exact time of the oldest (or newest) entry counted in `groups`."""
    if not groups:
        return None
    if newest:
        g = max(groups, key=lambda g: g.last)
        coarse, step = g.last, g.last_step
    else:
        g = min(groups, key=lambda g: g.first)
        coarse, step = g.first, g.first_step
    if not step:
        return coarse
    exact = await rollups.exact_time(conn, tenant_id, f, coarse, step, newest=newest)
    return exact or coarse


async def compute_stats(
    request: Request[Any, Any, Any], tenant_id: uuid.UUID, w: Window
) -> StatsOut:
    guard: QueryGuard = request.app.state.query_guard
    f = w.counted
    async with guard.read(request.app.state.pool, tenant_id) as conn:
        groups, used_rollups = await rollups.count_groups(
            conn, tenant_id, f, ("service_name", "level")
        )
        first_ts = await _edge(conn, tenant_id, f, groups, newest=False)
        last_ts = await _edge(conn, tenant_id, f, groups, newest=True)
    by_level: dict[int, int] = {}
    by_service: dict[str, int] = {}
    for g in groups:
        service, level = g.key
        by_level[level] = by_level.get(level, 0) + g.count
        by_service[service] = by_service.get(service, 0) + g.count
    return StatsOut(
        total_count=sum(g.count for g in groups),
        by_level=_levels(by_level),
        by_service=dict(sorted(by_service.items(), key=lambda kv: (-kv[1], kv[0]))),
        first_timestamp=first_ts,
        last_timestamp=last_ts,
        start_time=w.start,
        end_time=w.requested_end,
        source=_source(used_rollups),
    )


def _bucket_times(w: Window, interval: timedelta, data_last: datetime | None) -> list[datetime]:
    """Every bucket of the window: through the end's bucket, or for an open window
    through now's (or the newest data's, when entries are dated ahead)."""
    first = rollups.floor_to(w.start, interval)
    if w.requested_end is not None:
        last = rollups.floor_to(w.requested_end - timedelta(microseconds=1), interval)
    else:
        last = rollups.floor_to(max(w.now, data_last or w.now), interval)
    count = int((last - first) / interval) + 1 if last >= first else 0
    return [first + interval * i for i in range(count)]


def _check_bucket_count(w: Window, interval: timedelta, name: str) -> None:
    end = w.requested_end or w.now
    buckets = (end - rollups.floor_to(w.start, interval)) / interval
    if buckets > MAX_BUCKETS:
        raise ValidationFailed(
            f"{buckets:.0f} buckets of {name} is more than {MAX_BUCKETS}",
            errors=[
                FieldError("interval", "choose a wider interval or a shorter time range"),
            ],
        )


async def compute_aggregate(
    request: Request[Any, Any, Any],
    tenant_id: uuid.UUID,
    w: Window,
    interval_name: Interval,
    group_by: Literal["service"] | None,
) -> AggregateOut:
    interval = INTERVALS[interval_name]
    guard: QueryGuard = request.app.state.query_guard
    async with guard.read(request.app.state.pool, tenant_id) as conn:
        rows, used_rollups = await rollups.count_buckets(
            conn, tenant_id, w.counted, interval, by_service=group_by == "service"
        )
    if group_by == "service":
        buckets = [
            Bucket(
                time=r.time,
                count=sum(r.levels),
                by_level=dict(zip(LEVEL_NAMES, r.levels, strict=True)),
                service_name=r.service_name,
            )
            for r in rows
        ]
    else:
        per_time = {r.time: r.levels for r in rows}
        empty = (0, 0, 0, 0, 0)
        data_last = rows[-1].time if rows else None
        buckets = [
            Bucket(time=t, count=sum(c), by_level=dict(zip(LEVEL_NAMES, c, strict=True)))
            for t in _bucket_times(w, interval, data_last)
            for c in [per_time.get(t, empty)]
        ]
    return AggregateOut(
        interval=interval_name,
        group_by=group_by,
        start_time=w.start,
        end_time=w.requested_end,
        source=_source(used_rollups),
        buckets=buckets,
    )


async def compute_services(
    request: Request[Any, Any, Any], tenant_id: uuid.UUID, w: Window
) -> ServicesOut:
    guard: QueryGuard = request.app.state.query_guard
    f = w.counted
    services = []
    async with guard.read(request.app.state.pool, tenant_id) as conn:
        groups, used_rollups = await rollups.count_groups(conn, tenant_id, f, ("service_name",))
        for g in sorted(groups, key=lambda g: g.key[0]):
            last_seen = rollups.floor_to(g.last, rollups.MINUTE)
            if g.last_step > rollups.MINUTE:
                # Seen last in a day or hour cell (not recently): find the minute.
                one = replace(f, services=(g.key[0],))
                found = await rollups.narrow(conn, tenant_id, one, g.last, g.last_step, newest=True)
                last_seen = rollups.floor_to(found[0], rollups.MINUTE) if found else last_seen
            services.append(ServiceOut(service_name=g.key[0], count=g.count, last_seen=last_seen))
    return ServicesOut(
        services=services,
        start_time=w.start,
        end_time=w.requested_end,
        source=_source(used_rollups),
    )


async def compute_storage(
    request: Request[Any, Any, Any], caller: Caller, all_tenants: bool
) -> StorageOut:
    state = request.app.state
    settings: Settings = state.settings
    guard: QueryGuard = state.query_guard
    async with guard.read(state.pool, caller.tenant_id) as conn:
        usage = await rollups.tenant_usage(conn, caller.tenant_id)
        quota = await rollups.tenant_quota_bytes(conn, caller.tenant_id, settings.log_max_size_gb)
    everyone = None
    if all_tenants:
        # Crosses tenants on purpose (admin only): outside the tenant-scoped transaction,
        # whose row-level security would hide the other tenants.
        async with state.pool.connection() as conn:
            tenants = await rollups.all_tenants_usage(conn)
            disk = await rollups.physical_size(conn)
        rows = sum(t.rows for t in tenants)
        total = disk.table_bytes + disk.index_bytes
        everyone = AllTenantsOut(
            tenants=[TenantUsageOut(t.tenant_id, t.rows, t.bytes) for t in tenants],
            rows=rows,
            bytes=sum(t.bytes for t in tenants),
            table_bytes=disk.table_bytes,
            index_bytes=disk.index_bytes,
            total_bytes=total,
            bytes_per_row=round(total / rows, 1) if rows else None,
        )
    return StorageOut(
        tenant_id=caller.tenant_id,
        rows=usage.rows,
        bytes=usage.bytes,
        quota_bytes=quota,
        quota_used=usage.bytes / quota if quota else 0.0,
        all_tenants=everyone,
    )


def _spec(model: Any, description: str, example: dict[str, Any]) -> ResponseSpec:
    return ResponseSpec(
        data_container=model,
        description=description + " X-Cache: hit, miss, bypass or off.",
        generate_examples=False,
        examples=[Example(summary="Example", value=example)],
    )


_STATS_EXAMPLE = {
    "total_count": 1520,
    "by_level": {"DEBUG": 301, "INFO": 912, "WARN": 190, "ERROR": 103, "FATAL": 14},
    "by_service": {"auth-service": 820, "payment": 700},
    "first_timestamp": "2024-01-15T00:00:03.120Z",
    "last_timestamp": "2024-01-15T23:59:58.004Z",
    "start_time": "2024-01-15T00:00:00Z",
    "end_time": "2024-01-16T00:00:00Z",
    "source": "rollup",
}
_AGGREGATE_EXAMPLE = {
    "interval": "1h",
    "group_by": None,
    "start_time": "2024-01-15T00:00:00Z",
    "end_time": "2024-01-15T02:00:00Z",
    "source": "rollup",
    "buckets": [
        {
            "time": "2024-01-15T00:00:00Z",
            "count": 60,
            "by_level": {"DEBUG": 12, "INFO": 40, "WARN": 5, "ERROR": 3, "FATAL": 0},
        },
        {
            "time": "2024-01-15T01:00:00Z",
            "count": 0,
            "by_level": {"DEBUG": 0, "INFO": 0, "WARN": 0, "ERROR": 0, "FATAL": 0},
        },
    ],
}
_SERVICES_EXAMPLE = {
    "services": [
        {"service_name": "auth-service", "count": 820, "last_seen": "2024-01-15T23:59:00Z"}
    ],
    "start_time": "2023-12-16T23:59:58Z",
    "end_time": None,
    "source": "rollup",
}
_STORAGE_EXAMPLE = {
    "tenant_id": "123e4567-e89b-12d3-a456-426614174000",
    "rows": 1520,
    "bytes": 684000,
    "quota_bytes": 53687091200,
    "quota_used": 1.3e-05,
}


class StatsController(Controller):
    path = "/api/v1/logs"
    tags = ["stats"]
    dependencies = {"caller": Provide(provide_caller)}
    security = OPENAPI_SECURITY

    @get(
        "/stats",
        summary="Counts by level and service, first and last entry",
        description="Filters as in GET /api/v1/logs, metadata.<key>=<value> included. Without "
        "start_time: the 24 hours before end_time (or now); without end_time the window is "
        "open.",
        dependencies={"log_filter": Provide(provide_filter)},
        responses={200: _spec(StatsOut, "Counts in the window.", _STATS_EXAMPLE)},
    )
    async def stats(
        self,
        request: Request[Any, Any, Any],
        caller: NamedDependency[Caller],
        log_filter: NamedDependency[LogFilter],
    ) -> Response[bytes]:
        caller.require("query")
        w = Window.of(log_filter, request.app.state.settings, STATS_WINDOW)

        async def compute() -> bytes:
            return _encoder.encode(await compute_stats(request, caller.tenant_id, w))

        key = w.cache_key(default_window=STATS_WINDOW.total_seconds())
        return await _answer(request, caller, "stats", key, _closed(request, w), compute)

    @post(
        "/aggregate",
        status_code=200,
        summary="Time-bucketed counts with a per-level breakdown",
        description="The filters of POST /api/v1/logs/query, `interval` (1m, 5m, 15m, 1h, "
        '6h, 1d; default 1h) and optionally `group_by: "service"`. Without start_time: '
        f"the 24 hours before end_time (or now). At most {MAX_BUCKETS} buckets.",
        responses={200: _spec(AggregateOut, "The buckets.", _AGGREGATE_EXAMPLE)},
    )
    async def aggregate(
        self,
        request: Request[Any, Any, Any],
        caller: NamedDependency[Caller],
        data: JSONBody[AggregateBody],
    ) -> Response[bytes]:
        caller.require("query")
        w = Window.of(data.log_filter(caller.tenant_id), request.app.state.settings, STATS_WINDOW)
        _check_bucket_count(w, INTERVALS[data.interval], data.interval)

        async def compute() -> bytes:
            answer = await compute_aggregate(
                request, caller.tenant_id, w, data.interval, data.group_by
            )
            return _encoder.encode(answer)

        key = w.cache_key(
            default_window=STATS_WINDOW.total_seconds(),
            interval=data.interval,
            group_by=data.group_by,
        )
        return await _answer(request, caller, "aggregate", key, _closed(request, w), compute)

    @get(
        "/services",
        summary="Services with entries, their counts and when last seen",
        description="Filters as in GET /api/v1/logs, metadata.<key>=<value> included. Without "
        "start_time: the last LOG_RETENTION_DAYS days. last_seen is the UTC minute of the "
        "service's newest entry.",
        dependencies={"log_filter": Provide(provide_filter)},
        responses={200: _spec(ServicesOut, "Services by name.", _SERVICES_EXAMPLE)},
    )
    async def services(
        self,
        request: Request[Any, Any, Any],
        caller: NamedDependency[Caller],
        log_filter: NamedDependency[LogFilter],
    ) -> Response[bytes]:
        caller.require("query")
        settings: Settings = request.app.state.settings
        window = timedelta(days=settings.log_retention_days)
        w = Window.of(log_filter, settings, window)

        async def compute() -> bytes:
            return _encoder.encode(await compute_services(request, caller.tenant_id, w))

        key = w.cache_key(default_window=window.total_seconds())
        return await _answer(request, caller, "services", key, _closed(request, w), compute)

    @get(
        "/storage",
        summary="Rows and bytes stored, against the quota",
        description="The caller's tenant. With all_tenants=true (admin scope only): every "
        "tenant and the disk used by log_entries, tables and indexes.",
        responses={200: _spec(StorageOut, "Storage use.", _STORAGE_EXAMPLE)},
    )
    async def storage(
        self,
        request: Request[Any, Any, Any],
        caller: NamedDependency[Caller],
        all_tenants: Annotated[
            bool, Parameter(description="Every tenant and the totals (admin scope).")
        ] = False,
    ) -> Response[bytes]:
        caller.require("query")
        if all_tenants and "admin" not in caller.scopes:
            raise Forbidden("all_tenants=true needs the admin scope")

        async def compute() -> bytes:
            return _encoder.encode(await compute_storage(request, caller, all_tenants))

        return await _answer(
            request, caller, "storage", {"all_tenants": all_tenants}, False, compute
        )
