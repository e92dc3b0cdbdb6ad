"""Request metrics: every HTTP request's duration by method, route template and status,
requests in flight, and the latency of successful queries (services/gateway/metrics.py).

Wrapped around the whole app as the access log is (app.py): unknown paths (404) and wrong
methods (405) are counted too. Labels come from closed sets: the route template Litestar
matched (`unmatched` when none did: a raw path would make a series per URL), and methods
outside HTTP's usual ones as `other`.
"""

from __future__ import annotations

import asyncio
import time

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.metrics import HTTP_IN_FLIGHT, HTTP_REQUEST_DURATION, QUERY_DURATION
from services.gateway.query.concurrency import is_query

_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
# nginx's code for a request whose client went away before the answer started (as the
# access log says).
_CLIENT_CLOSED = 499


class HttpMetrics:
    """ASGI middleware: per request, two clock reads and a few in-memory increments."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status: int | None = None

        async def observing_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        HTTP_IN_FLIGHT.inc()
        try:
            await self._app(scope, receive, observing_send)
        except asyncio.CancelledError:
            status = status or _CLIENT_CLOSED
            raise
        finally:
            HTTP_IN_FLIGHT.dec()
            # An exception that escaped before an answer started: the server answers 500.
            _observe(scope, status or 500, time.perf_counter() - started)


def _observe(scope: Scope, status: int, seconds: float) -> None:
    method = str(scope.get("method", ""))
    route = scope.get("path_template")
    HTTP_REQUEST_DURATION.labels(
        method if method in _METHODS else "other", route or "unmatched", str(status)
    ).observe(seconds)
    if route and 200 <= status < 300 and is_query(method, scope["path"]):
        QUERY_DURATION.labels(route).observe(seconds)
