"""GET /api/v1/logs/stream: live tail of the caller's logs over Server-Sent Events.

Filters are the query API's (same parameters, same meaning); `Last-Event-ID` (or
`?since=`, for clients that cannot set headers) resumes after an event already seen.
The stream itself is tail_session.py; this module reads the request and wires the
process's tail (tail_hub.py) into the app's lifespan.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from litestar import Controller, Litestar, Request, get
from litestar.di import NamedDependency, Provide
from litestar.openapi.spec import Example
from litestar.params import HeaderParameter, QueryParameter

from services.gateway.auth import OPENAPI_SECURITY, Caller, provide_caller
from services.gateway.query_params import provide_filter
from services.gateway.tail_events import Position
from services.gateway.tail_hub import TailHub
from services.gateway.tail_response import EventStream, on_exit_signals
from services.gateway.tail_store import TailReader
from shared.filters import LogFilter, compile_filter
from shared.redis_conn import make_redis
from shared.settings import Settings


@asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    """The process's tail: its own Redis client for the subscription (no socket
    timeout), started after the pool exists; SIGTERM ends open streams first."""
    settings: Settings = app.state.settings
    redis = make_redis(settings, blocking=True)
    reader = TailReader(app.state.pool, concurrency=max(1, settings.db_pool_max // 2))
    hub = TailHub(settings, reader, redis)
    await hub.start()
    app.state.tail = hub
    restore_signals = on_exit_signals(hub.begin_shutdown)
    try:
        yield
    finally:
        restore_signals()
        hub.begin_shutdown()
        await hub.stop()
        await redis.aclose()


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
        request: Request[Any, Any, Any],
        caller: NamedDependency[Caller],
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
        hub: TailHub = request.app.state.tail
        session = await hub.open(caller.tenant_id, where, resume)
        settings: Settings = request.app.state.settings
        return EventStream(session, settings.tail_write_timeout_seconds)
