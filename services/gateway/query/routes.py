"""The log query API: list, query, one entry, the trace view and the request view.

GET /api/v1/logs and POST /api/v1/logs/query take the same filters (query parameters or
the seed's JSON body) and answer a `LogPage`; both default to the last 24 hours and
go through the Redis query cache. Trace and request views read every retained day
unless given a window. Every read runs in the caller's tenant scope through the
`QueryGuard` (bounded concurrency and statement timeout).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import Body, FromPath, Parameter

from services.gateway.auth import Caller, provide_caller
from services.gateway.query.pages import LogPage, cached_page, entry_by_id, lookup
from services.gateway.query.params import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    PageRequest,
    QueryBody,
    page_size,
    provide_filter,
)
from services.gateway.query.store import Sort
from services.gateway.state import GatewayState
from shared.filters import LogFilter
from shared.model import LogEntryOut

# The trace and request views return a whole trace in one page when they can.
LOOKUP_PAGE_SIZE = MAX_PAGE_SIZE

_EXAMPLE_ENTRY = {
    "id": "01a21df8-b9a3-71ea-abcc-ad1441b8423e",
    "tenant_id": "123e4567-e89b-12d3-a456-426614174000",
    "service_name": "auth-service",
    "level": "ERROR",
    "message": "Failed to authenticate user",
    "timestamp": "2024-01-15T10:30:00Z",
    "trace_id": "abc123def456",
    "span_id": "span789",
    "user_id": "user-uuid",
    "request_id": "req-123",
    "metadata": {"error_code": "AUTH_001", "ip_address": "192.168.1.1"},
    "source": "handler/auth.go:45",
    "host": "pod-abc123",
    "environment": "production",
}
_PAGE_RESPONSE = ResponseSpec(
    data_container=LogPage,
    description="A page of entries, newest first unless sort=asc. X-Cache: hit, miss, "
    "bypass or off.",
    generate_examples=False,
    examples=[
        Example(
            summary="First page of a large result",
            value={
                "entries": [_EXAMPLE_ENTRY],
                "page": 1,
                "page_size": 100,
                "total_count": 48213,
                "total_is_estimate": True,
                "has_more": True,
                "next_cursor": "mQGkZGVzY9f_hQv_YGsJurnEENUttnV6sUS-u4-V2bLOi87X_4UNN",
            },
        )
    ],
)

_QUERY_EXAMPLE = Example(
    summary="The seed's query, plus a metadata filter",
    value={
        "service_name": "auth-service",
        "min_level": "WARN",
        "start_time": "2024-01-15T00:00:00Z",
        "end_time": "2024-01-15T23:59:59Z",
        "search": 'authentication "connection refused"',
        "environment": "production",
        "metadata": {"error_code": "AUTH_001"},
        "page": 1,
        "page_size": 100,
    },
)

_Time = Annotated[
    str | None,
    Parameter(description="RFC 3339 with a zone (2024-01-15T00:00:00Z) or relative (now-1h)."),
]
_Page = Annotated[int, Parameter(ge=1, description="Page number (offset paging).")]
_PageSize = Annotated[
    int | None,
    Parameter(ge=1, description=f"Entries per page, 1 to {MAX_PAGE_SIZE}."),
]
_Cursor = Annotated[
    str | None,
    Parameter(max_length=512, description="next_cursor of the previous page (same filters)."),
]
_Sort = Annotated[Sort, Parameter(description="Order by time: desc (newest first) or asc.")]


class QueryController(Controller):
    path = "/api/v1/logs"
    tags = ["query"]
    dependencies = {"caller": Provide(provide_caller)}

    @post(
        "/query",
        status_code=200,
        summary="Query log entries (the seed's query body)",
        description="tenant_id may be sent but must be the caller's tenant (else 403). "
        "Without start_time, the last 24 hours.",
        responses={200: _PAGE_RESPONSE},
    )
    async def query_logs(
        self,
        request: Request[Any, Any, Any],
        caller: NamedDependency[Caller],
        gateway: NamedDependency[GatewayState],
        data: Annotated[QueryBody, Body(examples=[_QUERY_EXAMPLE])],
    ) -> Response[bytes]:
        caller.require("query")
        raw = data.log_filter(caller.tenant_id)
        return await cached_page(
            gateway.query_guard, gateway.query_cache, caller.tenant_id, raw,
            data.page_request(), _cache_control(request),
        )  # fmt: skip

    @get("/trace/{trace_id:str}", summary="Every entry of a trace, all services, oldest first")
    async def trace(
        self,
        caller: NamedDependency[Caller],
        gateway: NamedDependency[GatewayState],
        trace_id: FromPath[str],
        start_time: _Time = None,
        end_time: _Time = None,
        page: _Page = 1,
        page_size: _PageSize = None,
        cursor: _Cursor = None,
        sort: _Sort = "asc",
    ) -> LogPage:
        caller.require("query")
        page_request = _page_request(page, page_size, cursor, sort, LOOKUP_PAGE_SIZE)
        return await lookup(
            gateway.query_guard, caller.tenant_id, "trace_id", trace_id, start_time, end_time,
            page_request,
        )  # fmt: skip

    @get("/request/{request_id:str}", summary="Every entry of a request, oldest first")
    async def by_request(
        self,
        caller: NamedDependency[Caller],
        gateway: NamedDependency[GatewayState],
        request_id: FromPath[str],
        start_time: _Time = None,
        end_time: _Time = None,
        page: _Page = 1,
        page_size: _PageSize = None,
        cursor: _Cursor = None,
        sort: _Sort = "asc",
    ) -> LogPage:
        caller.require("query")
        page_request = _page_request(page, page_size, cursor, sort, LOOKUP_PAGE_SIZE)
        return await lookup(
            gateway.query_guard, caller.tenant_id, "request_id", request_id, start_time,
            end_time, page_request,
        )  # fmt: skip

    @get("/{entry_id:uuid}", summary="One log entry by id")
    async def get_one(
        self,
        caller: NamedDependency[Caller],
        gateway: NamedDependency[GatewayState],
        entry_id: FromPath[uuid.UUID],
    ) -> LogEntryOut:
        caller.require("query")
        return await entry_by_id(gateway.query_guard, caller.tenant_id, entry_id)


@get(
    "/api/v1/logs",
    summary="List log entries",
    tags=["query"],
    dependencies={"caller": Provide(provide_caller), "log_filter": Provide(provide_filter)},
    description="Every filter of POST /api/v1/logs/query as a query parameter; metadata "
    "equality filters as metadata.<key>=<value> (true/false and numbers are typed, "
    'quote a value to match it as a string: metadata.code="500"). Without start_time, '
    "the last 24 hours.",
    responses={200: _PAGE_RESPONSE},
)
async def list_logs(
    request: Request[Any, Any, Any],
    caller: NamedDependency[Caller],
    gateway: NamedDependency[GatewayState],
    log_filter: NamedDependency[LogFilter],
    page: _Page = 1,
    page_size: _PageSize = None,
    cursor: _Cursor = None,
    sort: _Sort = "desc",
) -> Response[bytes]:
    # A plain handler, not a QueryController method: Litestar (2.25) cannot merge two
    # controllers on one path, and POST /api/v1/logs is IngestController's. app.py
    # registers it after IngestController.
    caller.require("query")
    page_request = _page_request(page, page_size, cursor, sort, DEFAULT_PAGE_SIZE)
    return await cached_page(
        gateway.query_guard,
        gateway.query_cache,
        caller.tenant_id,
        log_filter,
        page_request,
        _cache_control(request),
    )


def _cache_control(request: Request[Any, Any, Any]) -> str:
    return request.headers.get("cache-control", "")


def _page_request(
    page: int, size: int | None, cursor: str | None, sort: Sort, default_size: int
) -> PageRequest:
    return PageRequest(page=page, page_size=page_size(size, default_size), cursor=cursor, sort=sort)
