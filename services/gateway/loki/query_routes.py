"""Loki's read API under /loki/api/v1, for Grafana's Loki data source: query_range,
query, labels, label values, series, index stats, build info (and the tail, tail_ws.py).

Every read runs like the REST API's: the caller's tenant only (auth.py: X-Scope-OrgID in
trusted-header mode, else an API key, also as Basic auth's password), one of its
tenant's query slots, the query guard (QUERY_CONCURRENCY, QUERY_TIMEOUT_MS) and the
query cache. Parameters come as Grafana sends them: the query string, or a
form-encoded POST body. Errors are Loki's: plain text, 400 for a query we cannot answer.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Request, Response, Router, get, route
from litestar.datastructures import MultiDict
from litestar.di import NamedDependency, Provide
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Schema
from litestar.params import FromPath
from psycopg import AsyncConnection

from services.gateway.auth import OPENAPI_SECURITY, Caller, provide_caller, require_named_tenant
from services.gateway.content_type import MEDIA_TYPES_OPT
from services.gateway.loki.answers import TEXT, TEXT_ERROR_HANDLERS
from services.gateway.loki.compile import compile_log_query
from services.gateway.loki.detected import (
    DEFAULT_FIELD_LIMIT,
    DEFAULT_LINE_LIMIT,
    MAX_LINE_LIMIT,
    detected_fields,
    detected_labels,
)
from services.gateway.loki.label_query import (
    index_stats,
    label_names,
    label_values,
    selection,
    series,
)
from services.gateway.loki.log_query import read_entries, streams
from services.gateway.loki.logql import Constant, LogQLError, LogQuery, parse
from services.gateway.loki.metric_query import (
    MAX_POINTS,
    constant_points,
    instant_series,
    range_series,
)
from services.gateway.loki.read_params import (
    Window,
    default_step,
    direction_of,
    limit_of,
    parse_step,
    parse_time,
    window,
)
from services.gateway.loki.responses import (
    json_response,
    matrix_body,
    query_error,
    stats,
    streams_body,
    success,
    vector_body,
)
from services.gateway.loki.volume import volume_body, volume_query, volume_step, volumes
from services.gateway.openapi import OwnErrorShape
from services.gateway.state import GatewayState, state_of

FORM = "application/x-www-form-urlencoded"
# Grafana asks for structured metadata apart from the stream labels with this header.
_FLAGS_HEADER = "x-loki-response-encoding-flags"
# What /status/buildinfo claims: a Loki version whose API we follow (Grafana reads it to
# decide which features to offer).
LOKI_VERSION = "3.4.0"
_DEPENDENCIES = {"caller": Provide(provide_caller)}


def _text(description: str) -> OpenAPIResponse:
    return OpenAPIResponse(
        description=description,
        content={TEXT: OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))},
    )


@dataclasses.dataclass
class LokiReadOperation(OwnErrorShape):
    """A Loki read as documented: Loki's JSON, errors as text."""

    def __post_init__(self) -> None:
        self.responses = {
            "200": OpenAPIResponse(
                description="Loki's JSON answer",
                content={
                    "application/json": OpenAPIMediaType(schema=Schema(type=OpenAPIType.OBJECT))
                },
            ),
            "400": _text("A query we cannot answer (malformed, or outside the LogQL subset)"),
            "401": _text("No valid API key (trusted_header mode: no tenant header)"),
            "403": _text("The key lacks the query scope, or names another tenant"),
            "429": _text("The tenant's concurrent queries are all running"),
            "503": _text("Too many queries, or one ran past QUERY_TIMEOUT_MS"),
            "default": _text("Any other error, as text"),
        }


async def _params(request: Request[Any, Any, Any], caller: Caller) -> MultiDict[str]:
    """The query string, plus a form-encoded body (Grafana's POST mode), once the caller
    may read: authentication and scope first, so a caller without them learns nothing
    from the parameters' errors."""
    _authorize(request, caller)
    params = MultiDict(request.query_params.multi_items())
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if request.method == "POST" and media_type == FORM:
        form = await request.form()
        for key, value in form.multi_items():
            if isinstance(value, str):
                params.add(key, value)
    return params


def _authorize(request: Request[Any, Any, Any], caller: Caller) -> None:
    caller.require("query")
    require_named_tenant(request, caller)


@asynccontextmanager
async def _reading(request: Request[Any, Any, Any], caller: Caller) -> AsyncIterator[GatewayState]:
    """One of the caller's tenant's query slots, as the REST queries hold."""
    state = state_of(request)
    limit = (await state.credentials.limits(caller.tenant_id)).max_concurrent_queries
    with state.tenant_query_slots.hold(caller.tenant_id, limit):
        yield state


async def _cached(
    state: GatewayState,
    tenant_id: uuid.UUID,
    kind: str,
    key: dict[str, Any],
    end: datetime | None,
    compute: Callable[[], Awaitable[bytes]],
    request: Request[Any, Any, Any],
) -> Response[bytes]:
    cache = state.query_cache
    closed = end is not None and cache.is_closed(end, relative=False, now=datetime.now(UTC))
    answer = await cache.get_or_compute(
        tenant_id,
        kind,
        key,
        closed=closed,
        compute=compute,
        bypass="no-cache" in request.headers.get("cache-control", "").lower(),
    )
    return json_response(answer.body, {"X-Cache": str(answer.status)})


def _query_text(params: MultiDict[str]) -> str:
    text = params.get("query")
    if text is None:
        raise LogQLError(
            "parse error : syntax error: unexpected $end: the query parameter is missing"
        )
    return text


def _categorize(request: Request[Any, Any, Any]) -> bool:
    return "categorize-labels" in request.headers.get(_FLAGS_HEADER, "")


_QUERY_OPTS = {
    "status_code": 200,
    # Grafana POSTs forms; a JSON body (or none) is read as no parameters at all.
    "opt": {MEDIA_TYPES_OPT: (FORM, "", "application/json")},
    "dependencies": _DEPENDENCIES,
    "operation_class": LokiReadOperation,
    "security": OPENAPI_SECURITY,
    "tags": ["loki"],
}


@route(
    "/query_range",
    http_method=["GET", "POST"],
    summary="Loki query_range: log lines (streams) or a metric (matrix)",
    **_QUERY_OPTS,  # type: ignore[arg-type]
)
async def query_range(
    request: Request[Any, Any, Any], caller: NamedDependency[Caller]
) -> Response[bytes]:
    params = await _params(request, caller)
    text = _query_text(params)
    query = parse(text)
    w = window(params.get("start"), params.get("end"), params.get("since"))
    step = parse_step(params["step"]) if params.get("step") else default_step(w)
    limit = limit_of(params.get("limit"))
    direction = direction_of(params.get("direction"))
    categorize = _categorize(request)
    async with _reading(request, caller) as state:
        guard, tenant = state.query_guard, caller.tenant_id

        async def compute() -> bytes:
            began = time.perf_counter()
            if isinstance(query, LogQuery):
                sel = compile_log_query(query, w.start, w.end)
                async with guard.read(tenant) as conn:
                    entries = await read_entries(conn, tenant, sel, direction, limit)
                took = time.perf_counter() - began
                result = streams(entries, categorize=categorize)
                return streams_body(result, stats(took, len(entries), len(entries)), categorize)
            if isinstance(query, Constant):
                points = constant_points(query.value, w.start, w.end, step)
                return matrix_body({(): dict.fromkeys(points, query.value)}, stats(0.0))
            async with guard.read(tenant) as conn:
                found = await range_series(
                    conn, tenant, query, w.start, w.end, step, state.kept_hours
                )
            return matrix_body(found, stats(time.perf_counter() - began))

        key = {
            "query": text,
            "start": w.start,
            "end": w.end,
            "step": step.total_seconds(),
            "limit": limit,
            "direction": direction,
            "categorize": categorize,
        }
        return await _cached(state, tenant, "loki_range", key, w.end, compute, request)


@route(
    "/query",
    http_method=["GET", "POST"],
    summary="Loki instant query: a metric at one time (vector)",
    **_QUERY_OPTS,  # type: ignore[arg-type]
)
async def query_instant(
    request: Request[Any, Any, Any], caller: NamedDependency[Caller]
) -> Response[bytes]:
    params = await _params(request, caller)
    text = _query_text(params)
    query = parse(text)
    at = parse_time(params["time"], "time") if params.get("time") else datetime.now(UTC)
    limit_of(params.get("limit"))
    direction_of(params.get("direction"))
    if isinstance(query, LogQuery):
        raise LogQLError(
            "log queries are not supported as an instant query type, please change your "
            "query to a range query type"
        )
    async with _reading(request, caller) as state:
        if isinstance(query, Constant):
            t = at.timestamp()
            return json_response(vector_body({(): {t: query.value}}, stats(0.0)))
        guard, tenant = state.query_guard, caller.tenant_id

        async def compute() -> bytes:
            began = time.perf_counter()
            async with guard.read(tenant) as conn:
                found = await instant_series(conn, tenant, query, at, state.kept_hours)
            return vector_body(found, stats(time.perf_counter() - began))

        key = {"query": text, "time": at}
        return await _cached(state, tenant, "loki_instant", key, at, compute, request)


async def _label_read(
    request: Request[Any, Any, Any],
    caller: Caller,
    kind: str,
    key: dict[str, Any],
    w: Window,
    read: Callable[[AsyncConnection[Any]], Awaitable[bytes]],
) -> Response[bytes]:
    """A label-browser read in the caller's tenant, through the query cache."""
    async with _reading(request, caller) as state:

        async def compute() -> bytes:
            async with state.query_guard.read(caller.tenant_id) as conn:
                return await read(conn)

        key = {**key, "start": w.start, "end": w.end}
        return await _cached(state, caller.tenant_id, kind, key, w.end, compute, request)


@get("/labels", summary="Loki label names", **_QUERY_OPTS)  # type: ignore[arg-type]
async def labels(
    request: Request[Any, Any, Any], caller: NamedDependency[Caller]
) -> Response[bytes]:
    params = await _params(request, caller)
    w = window(params.get("start"), params.get("end"), params.get("since"))
    sel = selection(params.get("query"), w)

    async def read(conn: AsyncConnection[Any]) -> bytes:
        return success(await label_names(conn, caller.tenant_id, sel))

    key = {"query": params.get("query")}
    return await _label_read(request, caller, "loki_labels", key, w, read)


@get("/label/{name:str}/values", summary="Loki label values", **_QUERY_OPTS)  # type: ignore[arg-type]
async def values(
    request: Request[Any, Any, Any], caller: NamedDependency[Caller], name: FromPath[str]
) -> Response[bytes]:
    params = await _params(request, caller)
    w = window(params.get("start"), params.get("end"), params.get("since"))
    sel = selection(params.get("query"), w)

    async def read(conn: AsyncConnection[Any]) -> bytes:
        return success(await label_values(conn, caller.tenant_id, sel, name))

    key = {"query": params.get("query"), "name": name}
    return await _label_read(request, caller, "loki_values", key, w, read)


@route("/series", http_method=["GET", "POST"], summary="Loki series", **_QUERY_OPTS)  # type: ignore[arg-type]
async def series_list(
    request: Request[Any, Any, Any], caller: NamedDependency[Caller]
) -> Response[bytes]:
    params = await _params(request, caller)
    w = window(params.get("start"), params.get("end"), params.get("since"))
    matches = params.getall("match[]", []) or params.getall("match", [])
    if not matches:
        raise LogQLError('match[] is required: a selector such as {service_name="api"}')
    if len(matches) > 16:
        raise LogQLError("at most 16 match[] selectors")
    selections = [selection(m, w) for m in matches]

    async def read(conn: AsyncConnection[Any]) -> bytes:
        return success(await series(conn, caller.tenant_id, selections))

    return await _label_read(request, caller, "loki_series", {"match": matches}, w, read)


@get("/index/stats", summary="Loki index stats (entries, streams)", **_QUERY_OPTS)  # type: ignore[arg-type]
async def stats_of_index(
    request: Request[Any, Any, Any], caller: NamedDependency[Caller]
) -> Response[bytes]:
    params = await _params(request, caller)
    w = window(params.get("start"), params.get("end"), params.get("since"))
    text = _query_text(params)
    sel = selection(text, w)

    async def read(conn: AsyncConnection[Any]) -> bytes:
        # Loki answers this one without the status/data envelope.
        return msgspec.json.encode(await index_stats(conn, caller.tenant_id, sel))

    return await _label_read(request, caller, "loki_index_stats", {"query": text}, w, read)


async def _volume(
    request: Request[Any, Any, Any], caller: Caller, *, ranged: bool
) -> Response[bytes]:
    params = await _params(request, caller)
    w = window(params.get("start"), params.get("end"), params.get("since"))
    q = volume_query(
        params.get("query"),
        params.get("targetLabels"),
        params.get("aggregateBy"),
        params.get("limit"),
        w,
    )
    step = None
    if ranged:
        asked = parse_step(params["step"]) if params.get("step") else default_step(w)
        if (w.end - w.start) / asked > MAX_POINTS:
            raise LogQLError(
                "exceeded maximum resolution of 11,000 points per time series. Try increasing "
                "the value of the step parameter"
            )
        step = volume_step(asked)

    async def read(conn: AsyncConnection[Any]) -> bytes:
        began = time.perf_counter()
        found = await volumes(conn, caller.tenant_id, q, step)
        data = volume_body(found, w.end, step)
        return success({**data, "stats": stats(time.perf_counter() - began)})

    key = {
        "query": params.get("query"),
        "targets": q.labels,
        "by_series": q.by_series,
        "limit": q.limit,
        "step": step.total_seconds() if step else None,
    }
    kind = "loki_volume_range" if ranged else "loki_volume"
    return await _label_read(request, caller, kind, key, w, read)


@route(
    "/index/volume",
    http_method=["GET", "POST"],
    summary="Loki index volume: bytes per series over the window (vector), from the rollups",
    **_QUERY_OPTS,  # type: ignore[arg-type]
)
async def index_volume(
    request: Request[Any, Any, Any], caller: NamedDependency[Caller]
) -> Response[bytes]:
    return await _volume(request, caller, ranged=False)


@route(
    "/index/volume_range",
    http_method=["GET", "POST"],
    summary="Loki index volume per step (matrix), from the rollups",
    **_QUERY_OPTS,  # type: ignore[arg-type]
)
async def index_volume_range(
    request: Request[Any, Any, Any], caller: NamedDependency[Caller]
) -> Response[bytes]:
    return await _volume(request, caller, ranged=True)


@get("/detected_labels", summary="Loki detected labels and their cardinality", **_QUERY_OPTS)  # type: ignore[arg-type]
async def labels_detected(
    request: Request[Any, Any, Any], caller: NamedDependency[Caller]
) -> Response[bytes]:
    params = await _params(request, caller)
    w = window(params.get("start"), params.get("end"), params.get("since"))
    query = params.get("query")
    selection(query, w)  # a malformed selector is a 400 before a slot is taken

    async def read(conn: AsyncConnection[Any]) -> bytes:
        found = await detected_labels(conn, caller.tenant_id, query, w)
        # Loki answers this one without the status/data envelope.
        return msgspec.json.encode({"detectedLabels": found})

    return await _label_read(request, caller, "loki_detected_labels", {"query": query}, w, read)


def _count(params: MultiDict[str], names: tuple[str, ...], default: int, name: str) -> int:
    text = next((params[n] for n in names if params.get(n)), None)
    if text is None:
        return default
    try:
        value = int(text.strip())
    except ValueError:
        raise LogQLError(f'invalid parameter "{name}": cannot parse "{text[:32]}"') from None
    if value <= 0:
        raise LogQLError("limit must be a positive value")
    return value


@get("/detected_fields", summary="Loki detected fields of the newest entries", **_QUERY_OPTS)  # type: ignore[arg-type]
async def fields_detected(
    request: Request[Any, Any, Any], caller: NamedDependency[Caller]
) -> Response[bytes]:
    params = await _params(request, caller)
    w = window(params.get("start"), params.get("end"), params.get("since"))
    text = _query_text(params)
    sel = selection(text, w)
    line_limit = _count(params, ("line_limit",), DEFAULT_LINE_LIMIT, "line_limit")
    if line_limit > MAX_LINE_LIMIT:
        raise LogQLError(
            f"max entries limit per query exceeded, limit > max_entries_limit ({line_limit} > "
            f"{MAX_LINE_LIMIT})"
        )
    field_limit = _count(params, ("limit", "field_limit"), DEFAULT_FIELD_LIMIT, "limit")

    async def read(conn: AsyncConnection[Any]) -> bytes:
        found = await detected_fields(conn, caller.tenant_id, sel, line_limit, field_limit)
        return msgspec.json.encode(found)

    key = {"query": text, "line_limit": line_limit, "field_limit": field_limit}
    return await _label_read(request, caller, "loki_detected_fields", key, w, read)


@get("/status/buildinfo", summary="Loki build info (Grafana reads the version)", **_QUERY_OPTS)  # type: ignore[arg-type]
async def buildinfo(
    request: Request[Any, Any, Any], caller: NamedDependency[Caller]
) -> dict[str, str]:
    _authorize(request, caller)
    return {
        "version": LOKI_VERSION,
        "revision": "minisource-log",
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
    }


def loki_read_router() -> Router:
    from services.gateway.loki.tail_ws import tail

    return Router(
        path="/loki/api/v1",
        route_handlers=[
            query_range,
            query_instant,
            labels,
            values,
            series_list,
            stats_of_index,
            index_volume,
            index_volume_range,
            labels_detected,
            fields_detected,
            buildinfo,
            tail,
        ],
        exception_handlers={**TEXT_ERROR_HANDLERS, LogQLError: query_error},
    )
