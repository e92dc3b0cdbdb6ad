"""A small Server-Sent Events client over a raw socket, for the live tail tests and the
tail benchmark: it can leave its socket unread (a slow client), shrink its receive
buffer, and hang up at any moment, which HTTP client libraries hide."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SSEEvent:
    event: str
    id: str | None
    data: str
    retry: int | None = None

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class SSEStream:
    """One open `text/event-stream` response (HTTP/1.1, chunked)."""

    status: int
    headers: dict[str, str]
    body: bytes
    _reader: asyncio.StreamReader
    _writer: asyncio.StreamWriter
    _text: bytes = b""
    _ended: bool = False
    last_id: str | None = None
    events: list[SSEEvent] = field(default_factory=list)

    @classmethod
    async def open(
        cls,
        port: int,
        path: str,
        headers: dict[str, str] | None = None,
        *,
        receive_buffer: int | None = None,
    ) -> SSEStream:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            # Before connect, so the advertised window is small from the start.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**16)
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        status_line = await reader.readline()
        status = int(status_line.split()[1])
        response_headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            response_headers[name.strip().lower()] = value.strip()
        stream = cls(status, response_headers, b"", reader, writer)
        if status != 200:
            length = int(response_headers.get("content-length", "0"))
            stream.body = await reader.readexactly(length) if length else await stream._chunks()
            stream.close()
        return stream

    async def _chunks(self) -> bytes:
        out = b""
        while (piece := await self._chunk()) is not None:
            out += piece
        return out

    async def _chunk(self) -> bytes | None:
        """The next piece of the chunked body, None at its end (or when the peer closed)."""
        size_line = await self._reader.readline()
        if not size_line:
            return None
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            await self._reader.readline()
            return None
        data = await self._reader.readexactly(size)
        await self._reader.readexactly(2)
        return data

    async def next_event(self) -> SSEEvent | None:
        """The next event with data (heartbeats included), None once the stream ended."""
        while True:
            while b"\n\n" not in self._text:
                if self._ended:
                    return None
                try:
                    piece = await self._chunk()
                except (asyncio.IncompleteReadError, ConnectionError):
                    piece = None
                if piece is None:
                    self._ended = True
                    return None
                self._text += piece
            block, self._text = self._text.split(b"\n\n", 1)
            event = _parse(block.decode())
            if event.id is not None:
                self.last_id = event.id
            if event.data or event.event != "message":
                self.events.append(event)
                return event

    async def collect(
        self,
        until: Callable[[list[SSEEvent]], bool],
        *,
        within: float,
        kinds: tuple[str, ...] = ("log",),
    ) -> list[SSEEvent]:
        """Events of `kinds` read until `until(events)` holds; fails after `within` s."""
        got: list[SSEEvent] = []
        deadline = time.monotonic() + within
        while not until(got):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {within}s with {len(got)} events")
            try:
                async with asyncio.timeout(remaining):
                    event = await self.next_event()
            except TimeoutError:
                continue
            if event is None:
                break
            if event.event in kinds:
                got.append(event)
        return got

    async def logs(self, count: int, within: float) -> list[SSEEvent]:
        """Exactly the next `count` log events (fails on fewer within `within` s)."""
        got = await self.collect(lambda e: len(e) >= count, within=within)
        assert len(got) == count, f"stream ended after {len(got)} of {count} log events"
        return got

    def close(self) -> None:
        self._writer.close()


def _parse(block: str) -> SSEEvent:
    event, event_id, data, retry = "message", None, [], None
    for line in block.split("\n"):
        if not line or line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "id":
            event_id = value
        elif name == "data":
            data.append(value)
        elif name == "retry":
            retry = int(value)
    return SSEEvent(event, event_id, "\n".join(data), retry)


class TcpProxy:
    """A TCP forwarder to a local port that a test can cut: every connection through it
    is aborted, and new ones are refused until `restore()` (a Redis restart, as seen by
    the processes connected through it)."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._refusing = False
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        self._links |= {writer, up_writer}
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        self._links -= {writer, up_writer}

    def cut(self) -> None:
        self._refusing = True
        for link in self._links:
            link.transport.abort()

    def restore(self) -> None:
        self._refusing = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(2**16):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.transport.abort()
