"""A span per HTTP request (tracing on: shared/tracing.py), as an ASGI middleware around the
whole app, so that unknown paths and wrong methods get theirs too.

The span is the request's SERVER span: named `<METHOD> <route template>`, a child of the
caller's W3C `traceparent` header when it sends one. Attributes: `http.request.method`,
`http.route` (the template, never the raw path: ids and search text stay out),
`http.response.status_code`, `minisource.tenant_id` (an authenticated caller's), and for
ingest `minisource.ingest.accepted` / `.rejected` (services/gateway/ingest/accept.py).
Everything the request does (Redis commands, SQL statements, the stream message's trace
context) happens inside it. Health probes are not traced: they would be most spans.
"""

from __future__ import annotations

import asyncio

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from opentelemetry.trace import SpanKind, Status, StatusCode

from services.gateway.auth import memoised_caller
from shared.tracing import incoming_context, tracer

_UNTRACED = frozenset({"/health", "/ready", "/live", "/metrics"})
# nginx's code for a request whose client went away before the answer started.
_CLIENT_CLOSED = 499


class RequestSpans:
    """Wraps the app; installed only when tracing is on (services/gateway/app.py)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._tracer = tracer("minisource.gateway")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["path"] in _UNTRACED:
            await self._app(scope, receive, send)
            return
        method = scope["method"]
        with self._tracer.start_as_current_span(
            method,
            context=incoming_context(scope["headers"]),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method},
            # The status follows the answer (below), not any exception that passed by.
            set_status_on_exception=False,
        ) as span:
            status: int | None = None

            async def status_send(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await self._app(scope, receive, status_send)
            except asyncio.CancelledError:
                status = status or _CLIENT_CLOSED
                raise
            except Exception:
                status = status or 500  # the server answers 500; the span records why
                raise
            finally:
                if span.is_recording():
                    # Set by Litestar's router once a route matched.
                    route = scope.get("path_template")
                    if route:
                        span.update_name(f"{method} {route}")
                        span.set_attribute("http.route", route)
                    span.set_attribute("http.response.status_code", status or 500)
                    caller = memoised_caller(scope)
                    if caller is not None:
                        span.set_attribute("minisource.tenant_id", str(caller.tenant_id))
                    if (status or 500) >= 500:
                        span.set_status(Status(StatusCode.ERROR))
