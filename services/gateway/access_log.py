"""The gateway's access log: one JSON line per HTTP request, through the root logger
(shared/logsetup.py formats it), logger `gateway.access` at level info.

Each line has `method`, `route` (the route template, e.g. /api/v1/logs/{entry_id}: the
raw path can carry ids and search text, and templates group well; null when no route
matched), `status`, `duration_ms`, `tenant_id` (when the request was authenticated),
`bytes` (of the answer's body) and `request_bytes` (the declared Content-Length).
ACCESS_LOG=false leaves it out of the app entirely.
"""

from __future__ import annotations

import asyncio
import logging
import time

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.auth import memoised_caller
from shared.logsetup import FIELDS

log = logging.getLogger("gateway.access")

# nginx's code for a request whose client went away before the answer started.
_CLIENT_CLOSED = 499


class AccessLog:
    """ASGI middleware around the whole app, routing included: an unknown path (404) or
    a wrong method (405) is logged too, which middleware given to Litestar, run only for
    routes that exist, would miss. Per request it costs two clock reads, a counter in
    `send` and one log record, formatted only by a handler that emits it."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or not log.isEnabledFor(logging.INFO):
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status: int | None = None
        sent = 0

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self._app(scope, receive, counting_send)
        except asyncio.CancelledError:
            status = status or _CLIENT_CLOSED
            raise
        finally:
            # An exception that escaped before an answer started: the server answers 500.
            _log(scope, status or 500, sent, time.perf_counter() - started)


def _log(scope: Scope, status: int, sent: int, seconds: float) -> None:
    caller = memoised_caller(scope)
    method = scope.get("method", "")
    # Set by Litestar's router once a route matched.
    route = scope.get("path_template")
    log.info(
        "%s %s %d",
        method,
        route or "-",
        status,
        extra={
            FIELDS: {
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "tenant_id": caller.tenant_id if caller is not None else None,
                "bytes": sent,
                "request_bytes": _declared_length(scope),
            }
        },
    )


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
