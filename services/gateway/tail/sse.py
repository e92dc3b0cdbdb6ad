"""The SSE response of a tail session.

Litestar's own streaming responses do not tell the generator that the client went away
(litestar#3772). This response owns the whole exchange instead: it writes the session's
events, watches for `http.disconnect`, gives up on a client whose socket stays full for
TAIL_WRITE_TIMEOUT seconds, and closes the session however the exchange ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from litestar import Litestar, Request, Response
from litestar.background_tasks import BackgroundTask, BackgroundTasks
from litestar.datastructures import Cookie
from litestar.enums import MediaType
from litestar.response.base import ASGIResponse
from litestar.types import Receive, Scope, Send, TypeEncodersMap

from services.gateway.tail.session import TailSession

log = logging.getLogger("gateway.tail")

SSE_HEADERS = {
    "Cache-Control": "no-cache",
    # nginx and compatible proxies: pass each event on at once instead of buffering.
    "X-Accel-Buffering": "no",
}


class EventStream(Response[bytes]):
    """`text/event-stream` carrying one tail session."""

    def __init__(self, session: TailSession, write_timeout: float) -> None:
        super().__init__(content=b"", media_type="text/event-stream", headers=SSE_HEADERS)
        self.session = session
        self.write_timeout = write_timeout

    def to_asgi_response(
        self,
        app: Litestar | None,
        request: Request[Any, Any, Any],
        *,
        background: BackgroundTask | BackgroundTasks | None = None,
        cookies: Iterable[Cookie] | None = None,
        encoded_headers: Iterable[tuple[bytes, bytes]] | None = None,
        headers: dict[str, str] | None = None,
        is_head_response: bool = False,
        media_type: MediaType | str | None = None,
        status_code: int | None = None,
        type_encoders: TypeEncodersMap | None = None,
    ) -> ASGIResponse:
        return _EventStreamASGI(
            self.session,
            self.write_timeout,
            headers={**(headers or {}), **self.headers},
            media_type="text/event-stream",
        )


class _EventStreamASGI(ASGIResponse):
    _should_set_content_length = False

    def __init__(
        self,
        session: TailSession,
        write_timeout: float,
        *,
        headers: dict[str, Any],
        media_type: str,
    ) -> None:
        super().__init__(headers=headers, media_type=media_type)
        self._session = session
        self._write_timeout = write_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.start_response(send)
            pump = asyncio.create_task(self._pump(send))
            watch = asyncio.create_task(_disconnected(receive))
            try:
                await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (pump, watch):
                    task.cancel()
                await asyncio.gather(pump, watch, return_exceptions=True)
            if not pump.cancelled():
                pump.result()  # a bug in the stream surfaces as one
        finally:
            self._session.close()

    async def _pump(self, send: Send) -> None:
        events = self._session.events()
        try:
            async for chunk in events:
                self._session.writing = True
                async with asyncio.timeout(self._write_timeout):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                self._session.writing = False
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except TimeoutError:
            # A peer that stopped reading (or vanished without a FIN) would hold the stream
            # forever; the server closes the connection when we return unfinished.
            log.info(
                "tail client of %s did not read for %ss; closing its stream",
                self._session.tenant_id,
                self._write_timeout,
            )
        finally:
            await events.aclose()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
