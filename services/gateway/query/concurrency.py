"""Per-tenant query concurrency: a query route holds one of its tenant's
`max_concurrent_queries` slots in this process while it runs (429 beyond).

Every route under /api/v1/logs is a query except ingest and live tail (long-lived, it
holds no slot), so routes added later are limited without being listed here.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from services.gateway.auth import conventional_scope, provide_caller
from services.gateway.state import state_of

_TAIL_PATH = "/api/v1/logs/stream"


def is_query(method: str, path: str) -> bool:
    if conventional_scope(method, path) != "query":
        return False
    path = path.rstrip("/")
    return not (path == _TAIL_PATH or path.startswith(_TAIL_PATH + "/"))


class QueryConcurrencyMiddleware(ASGIMiddleware):
    """Holds a query slot of the caller's tenant while a query route runs."""

    scopes = (ScopeType.HTTP,)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if not is_query(scope["method"], scope["path"]):  # type: ignore[typeddict-item]
            await next_app(scope, receive, send)
            return
        request: Request[Any, Any, Any] = Request(scope, receive)
        caller = await provide_caller(request)
        state = state_of(request)
        limit = (await state.credentials.limits(caller.tenant_id)).max_concurrent_queries
        with state.tenant_query_slots.hold(caller.tenant_id, limit):
            await next_app(scope, receive, send)
