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

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody, Parameter

from services.gateway.auth import OPENAPI_SECURITY, Caller, provide_caller
from services.gateway.openapi import example_response
from services.gateway.query.cache import cached_response, range_is_closed
from services.gateway.query.params import BodyFilter, provide_filter
from services.gateway.state import GatewayState
from services.gateway.stats.counting import compute_aggregate, compute_services, compute_stats
from services.gateway.stats.models import AggregateOut, ServicesOut, StatsOut, StorageOut
from services.gateway.stats.storage import compute_storage
from services.gateway.stats.windows import (
    INTERVALS,
    MAX_BUCKETS,
    STATS_WINDOW,
    Interval,
    Window,
    check_bucket_count,
)
from shared.errors import Forbidden
from shared.filters import LogFilter

_encoder = msgspec.json.Encoder()


class AggregateBody(BodyFilter, kw_only=True, forbid_unknown_fields=True):
    """The filters of POST /api/v1/logs/query, plus the bucket width and grouping.

    `tenant_id` may be sent (as in the seed's query shape) but must be the caller's.
    """

    interval: Interval = "1h"
    group_by: Literal["service"] | None = None


def _spec(model: Any, description: str, example: dict[str, Any]) -> ResponseSpec:
    return example_response(model, description + " X-Cache: hit, miss, bypass or off.", example)


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
    "quota_scope": "all_tenants",
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
        gateway: NamedDependency[GatewayState],
        log_filter: NamedDependency[LogFilter],
    ) -> Response[bytes]:
        caller.require("query")
        w = Window.of(log_filter, STATS_WINDOW)
        return await _cached(
            request, gateway, caller, "stats", w,
            lambda: compute_stats(gateway.query_guard, caller.tenant_id, w, gateway.kept_hours),
            default_window=STATS_WINDOW.total_seconds(),
        )  # fmt: skip

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
        gateway: NamedDependency[GatewayState],
        data: JSONBody[AggregateBody],
    ) -> Response[bytes]:
        caller.require("query")
        w = Window.of(data.log_filter(caller.tenant_id), STATS_WINDOW)
        check_bucket_count(w, INTERVALS[data.interval], data.interval)
        return await _cached(
            request, gateway, caller, "aggregate", w,
            lambda: compute_aggregate(
                gateway.query_guard, caller.tenant_id, w, data.interval, data.group_by,
                gateway.kept_hours,
            ),
            default_window=STATS_WINDOW.total_seconds(),
            interval=data.interval,
            group_by=data.group_by,
        )  # fmt: skip

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
        gateway: NamedDependency[GatewayState],
        log_filter: NamedDependency[LogFilter],
    ) -> Response[bytes]:
        caller.require("query")
        window = timedelta(days=gateway.settings.log_retention_days)
        w = Window.of(log_filter, window)
        return await _cached(
            request, gateway, caller, "services", w,
            lambda: compute_services(gateway.query_guard, caller.tenant_id, w, gateway.kept_hours),
            default_window=window.total_seconds(),
        )  # fmt: skip

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
        gateway: NamedDependency[GatewayState],
        all_tenants: Annotated[
            bool, Parameter(description="Every tenant and the totals (admin scope).")
        ] = False,
    ) -> Response[bytes]:
        caller.require("query")
        if all_tenants and "admin" not in caller.scopes:
            raise Forbidden("all_tenants=true needs the admin scope")

        async def compute() -> bytes:
            usage = await compute_storage(
                gateway.query_guard,
                caller.tenant_id,
                gateway.settings.log_max_size_gb,
                all_tenants=all_tenants,
            )
            return _encoder.encode(usage)

        return await cached_response(
            gateway.query_cache,
            caller.tenant_id,
            "storage",
            {"all_tenants": all_tenants},
            closed=False,
            compute=compute,
            cache_control=request.headers.get("cache-control", ""),
        )


async def _cached(
    request: Request[Any, Any, Any],
    gateway: GatewayState,
    caller: Caller,
    kind: str,
    w: Window,
    count: Callable[[], Awaitable[msgspec.Struct]],
    **key_extra: Any,
) -> Response[bytes]:
    """A counting answer through the query cache, keyed by its window and `key_extra`."""

    async def compute() -> bytes:
        return _encoder.encode(await count())

    cache = gateway.query_cache
    return await cached_response(
        cache,
        caller.tenant_id,
        kind,
        w.cache_key(**key_extra),
        closed=range_is_closed(cache, w.raw, w.compiled, w.now),
        compute=compute,
        cache_control=request.headers.get("cache-control", ""),
    )
