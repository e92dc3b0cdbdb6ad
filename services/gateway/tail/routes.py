"""GET /api/v1/logs/stream: live tail of the caller's logs over Server-Sent Events.

Filters are the query API's (same parameters, same meaning); `Last-Event-ID` (or
`?since=`, for clients that cannot set headers) resumes after an event already seen.
The stream itself is session.py; this module reads the request and opens a session on
the process's tail (hub.py).
"""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency, Provide
from litestar.openapi.spec import Example
from litestar.params import HeaderParameter, QueryParameter

from services.gateway.auth import OPENAPI_SECURITY, Caller, provide_caller
from services.gateway.query.params import provide_filter
from services.gateway.state import GatewayState
from services.gateway.tail.events import Position
from services.gateway.tail.sse import EventStream
from shared.filters import LogFilter, compile_filter


class StreamController(Controller):
    path = "/api/v1/logs/stream"
    tags = ["live tail"]
    dependencies = {"caller": Provide(provide_caller), "log_filter": Provide(provide_filter)}
    security = OPENAPI_SECURITY

    @get(
        "/",
        media_type="text/event-stream",
        summary="Live tail of the caller's logs (Server-Sent Events)",
        description=(
            "Events: `log` (data: the entry), `heartbeat` (every TAIL_HEARTBEAT_SECONDS), "
            "`dropped` (what this stream will not deliver, and `resume_from`). Every event "
            "has an `id:`; reconnect with `Last-Event-ID` (or `since`) to resume with no "
            "gap and no duplicate. Filters as in GET /api/v1/logs."
        ),
    )
    async def stream(
        self,
        caller: NamedDependency[Caller],
        gateway: NamedDependency[GatewayState],
        log_filter: NamedDependency[LogFilter],
        since: Annotated[
            str | None,
            QueryParameter(
                description="resume after this event id (Last-Event-ID wins when both)",
                examples=[Example(value="42-7")],
            ),
        ] = None,
        last_event_id: Annotated[str | None, HeaderParameter(name="Last-Event-ID")] = None,
    ) -> EventStream:
        caller.require("query")
        where = compile_filter(log_filter)
        resume = None
        if last_event_id:
            resume = Position.parse(last_event_id, "Last-Event-ID")
        elif since:
            resume = Position.parse(since, "since")
        session = await gateway.tail.open(caller.tenant_id, where, resume)
        return EventStream(session, gateway.settings.tail_write_timeout_seconds)
