"""GET /loki/api/v1/tail: Loki's live tail over a WebSocket, for Grafana's Live mode.

It is fed by the same tail hub as GET /api/v1/logs/stream (services/gateway/tail/): a
session of the hub is opened with the compiled selector, and each batch of its events
becomes one Loki message, `{"streams": [...], "dropped_entries": [...]}`. Before the
live entries, up to `limit` entries since `start` (default: the last hour) are sent
oldest first, as Loki does; a live entry already sent that way is not sent again.

The session's events are the SSE frames the hub makes (tail/events.py); they are read
back here rather than the hub learning a second wire format. A `dropped` event (a slow
client, a shutdown, a gap past the resume window) becomes a `dropped_entries` item; the
socket closes when the session ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import msgspec
from litestar import Request, WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.types import HTTPScope

from services.gateway.auth import Caller, provide_caller, require_named_tenant
from services.gateway.loki.compile import Selection, compile_log_query
from services.gateway.loki.log_query import read_entries, resolve_services, streams
from services.gateway.loki.logql import LogQLError, LogQuery, parse
from services.gateway.loki.read_params import limit_of, nanos, parse_time
from services.gateway.state import state_of
from shared.errors import RateLimited, ServiceError, Unavailable
from shared.model import LogEntryOut

log = logging.getLogger("gateway.tail")

# Which services a service_name pattern names is settled when the tail opens, among
# those seen in this window.
_SERVICES_WINDOW = timedelta(hours=24)
# A policy violation (bad query, no credential): the close code Loki's clients show.
_REFUSED = 1008
_TRY_AGAIN = 1013
_entry = msgspec.json.Decoder(LogEntryOut)
_event = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()


def _frames(chunk: bytes) -> list[tuple[str, bytes]]:
    """(event, data) of each SSE event in a chunk the session yields."""
    found = []
    for block in chunk.split(b"\n\n"):
        event, data = "", b""
        for line in block.split(b"\n"):
            if line.startswith(b"event: "):
                event = line[7:].decode()
            elif line.startswith(b"data: "):
                data = line[6:]
        if event:
            found.append((event, data))
    return found


def message(entries: list[LogEntryOut], dropped: list[dict[str, Any]]) -> bytes:
    body: dict[str, Any] = {"streams": streams(entries, categorize=False)}
    if dropped:
        body["dropped_entries"] = dropped
    return _encoder.encode(body)


async def _selection(
    socket: WebSocket[Any, Any, Any], caller: Caller, query: LogQuery
) -> Selection:
    sel = compile_log_query(query, None, None)
    if sel.service_test is None:
        return sel
    state = state_of(socket)
    now = datetime.now(UTC)
    windowed = replace(sel, where=replace(sel.where, start=now - _SERVICES_WINDOW, end=now))
    async with state.query_guard.read(caller.tenant_id) as conn:
        resolved = await resolve_services(conn, caller.tenant_id, windowed)
    return replace(resolved, where=replace(resolved.where, start=None, end=None))


@websocket("/tail", opt={"loki": True})
async def tail(socket: WebSocket[Any, Any, Any]) -> None:
    # Authenticated as an HTTP request (the upgrade is one): same headers, same rules.
    scope = cast(HTTPScope, {**socket.scope, "type": "http", "method": "GET"})
    request: Request[Any, Any, Any] = Request(scope, socket.receive)
    try:
        caller = await provide_caller(request)
        caller.require("query")
        require_named_tenant(request, caller)
        params = socket.query_params
        query = parse(params.get("query") or "")
        if not isinstance(query, LogQuery):
            raise LogQLError("tail takes a log query, not a metric query")
        limit = limit_of(params.get("limit"))
        start = parse_time(params["start"], "start") if params.get("start") else None
        sel = await _selection(socket, caller, query)
        state = state_of(socket)
        session = await state.tail.open(caller.tenant_id, sel.where, None)
    except (ServiceError, LogQLError) as exc:
        code = _TRY_AGAIN if isinstance(exc, RateLimited | Unavailable) else _REFUSED
        await socket.close(code=code, reason=str(exc)[:120])
        return
    try:
        await socket.accept()
        sent = await _backfill(socket, caller.tenant_id, sel, start, limit)
        await _pump(socket, session.events(), sent)
    except WebSocketDisconnect:
        pass
    finally:
        session.close()


async def _backfill(
    socket: WebSocket[Any, Any, Any],
    tenant_id: uuid.UUID,
    sel: Selection,
    start: datetime | None,
    limit: int,
) -> set[uuid.UUID]:
    """The last `limit` entries since `start`, oldest first; their ids."""
    now = datetime.now(UTC)
    since = start or now - timedelta(hours=1)
    windowed = replace(sel, where=replace(sel.where, start=since, end=None))
    state = state_of(socket)
    async with state.query_guard.read(tenant_id) as conn:
        newest = await read_entries(conn, tenant_id, windowed, "backward", limit)
    entries = list(reversed(newest))
    if entries:
        await socket.send_data(message(entries, []).decode())
    return {e.id for e in entries}


async def _pump(socket: WebSocket[Any, Any, Any], events: Any, seen: set[uuid.UUID]) -> None:
    """Session events to Loki messages until the session or the client ends (whichever
    first: the client's close is watched beside the stream, as the SSE response does)."""
    sending = asyncio.create_task(_send(socket, events, seen))
    watching = asyncio.create_task(_until_closed(socket))
    try:
        await asyncio.wait({sending, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sending, watching):
            task.cancel()
        await asyncio.gather(sending, watching, return_exceptions=True)
        await events.aclose()
    if sending.done() and not sending.cancelled() and sending.exception() is None:
        with contextlib.suppress(Exception):
            await socket.close()


async def _send(socket: WebSocket[Any, Any, Any], events: Any, seen: set[uuid.UUID]) -> None:
    async for chunk in events:
        entries: list[LogEntryOut] = []
        dropped: list[dict[str, Any]] = []
        for event, data in _frames(chunk):
            if event == "log":
                entry = _entry.decode(data)
                if entry.id not in seen:  # not sent by the backfill already
                    entries.append(entry)
            elif event == "dropped":
                dropped.append(_dropped(_event.decode(data)))
        if entries or dropped:
            await socket.send_data(message(entries, dropped).decode())


def _dropped(event: dict[str, Any]) -> dict[str, Any]:
    """Loki names each dropped entry; we know how many, not which: one item per notice,
    its labels saying why and how many (`reason`, `count`)."""
    count = event.get("dropped")
    labels = {"reason": str(event.get("reason", ""))}
    if count is not None:
        labels["count"] = str(count)
    return {"labels": labels, "timestamp": nanos(datetime.now(UTC))}


async def _until_closed(socket: WebSocket[Any, Any, Any]) -> None:
    with contextlib.suppress(Exception):
        while True:
            await socket.receive_data(mode="text")
