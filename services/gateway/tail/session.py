"""One tail client: its bounded buffer, its position, and the events written to it.

The client's position only moves forward, and only once an event has been written, so
what it is told to resume from is exactly what it received. Commits come from the feed
(live) or, for anything before the first live commit it holds, from PostgreSQL (catch
up): a commit the buffer skipped (lost publish, resume, overflow while catching up) is
read back, and one it already has is skipped. That makes the switch from PostgreSQL to
live free of gaps and duplicates.

The buffer holds at most TAIL_CLIENT_BUFFER events (plus the commit being offered).
When it fills while the client is live and the gateway is waiting for it to read (a slow
client), what it buffered is discarded, the client gets a `dropped` event (how many,
where to resume) and the stream ends. When it fills while the client is catching up from
PostgreSQL, the buffer is discarded too but nothing is lost: those commits are read from
there as well, at the client's pace.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass

import psycopg
from psycopg_pool import PoolTimeout

from services.gateway.metrics import TAIL_EVENTS_SENT
from services.gateway.tail.catchup import TailReader
from services.gateway.tail.events import (
    Position,
    dropped_frame,
    heartbeat_frame,
    log_frame,
    opening_frame,
)
from services.gateway.tail.feed import LiveBatch, TenantFeed, join_chunks
from shared.filters import CompiledFilter

log = logging.getLogger("gateway.tail")


@dataclass(slots=True)
class _Live:
    batch: LiveBatch
    indexes: list[int]
    chunks: list[bytes]


@dataclass(slots=True)
class _Quiet:
    """Commits first..last had nothing for this client."""

    first: int
    last: int


@dataclass(slots=True)
class _Head:
    """Commits up to `seq` exist; read from PostgreSQL whatever was not offered."""

    seq: int


@dataclass(frozen=True, slots=True)
class SessionLimits:
    buffer_events: int
    heartbeat_seconds: float
    retry_ms: int


class TailSession:
    """One client's stream: what the feed offers it, and what it is sent, in order."""

    def __init__(
        self,
        tenant_id: uuid.UUID,
        where: CompiledFilter,
        start: Position,
        *,
        resume: bool,
        feed: TenantFeed,
        reader: TailReader,
        limits: SessionLimits,
        on_close: Callable[[TailSession], None],
        notice: bytes = b"",
    ) -> None:
        self.tenant_id = tenant_id
        self.where = where
        self.position = start
        self._feed = feed
        self._reader = reader
        self._limits = limits
        self._on_close = on_close
        self._notice = notice
        self._queue: deque[_Live | _Quiet | _Head] = deque()
        self._queued_events = 0
        self._wake = asyncio.Event()
        self._resync = resume
        self._catching_up = False
        # Set by the response while a write to the client's socket is in progress.
        self.writing = False
        self._overflowed = False
        self._dropped = 0
        self._stopping = False
        self._closed = False

    # Called by the feed (synchronously, never blocking).

    def offer(self, batch: LiveBatch) -> None:
        if self._closed:
            return
        selection = batch.select(self.where)
        if self._overflowed:
            self._dropped += len(selection.indexes)
            return
        if not selection.indexes:
            last = self._queue[-1] if self._queue else None
            if isinstance(last, _Quiet) and last.last == batch.seq - 1:
                last.last = batch.seq
            else:
                self._queue.append(_Quiet(batch.seq, batch.seq))
            self._wake.set()
            return
        if self._queued_events >= self._limits.buffer_events:
            if self.writing and not self._catching_up:
                self._overflowed = True
                self._dropped += self._queued_events + len(selection.indexes)
            else:
                # Catching up, or starved of CPU, not of the client: read these from
                # PostgreSQL when the client gets there.
                self._resync = True
            self._queue.clear()
            self._queued_events = 0
            self._wake.set()
            return
        self._queue.append(_Live(batch, selection.indexes, selection.chunks))
        self._queued_events += len(selection.indexes)
        self._wake.set()

    def offer_head(self, seq: int) -> None:
        if self._closed or self._overflowed:
            return
        last = self._queue[-1] if self._queue else None
        if isinstance(last, _Head):
            last.seq = max(last.seq, seq)
        else:
            self._queue.append(_Head(seq))
        self._wake.set()

    def stop(self) -> None:
        """The gateway is shutting down: end with a final event after what is in hand."""
        self._stopping = True
        self._wake.set()

    def close(self) -> None:
        """Forget the client (idempotent): called however its response ended."""
        if self._closed:
            return
        self._closed = True
        self._queue.clear()
        self._queued_events = 0
        self._on_close(self)

    # The response writes what this yields, in order; a yield returns once written.

    async def events(self) -> AsyncGenerator[bytes, None]:
        yield opening_frame(self.position, self._limits.retry_ms) + self._notice
        try:
            while True:
                if self._stopping:
                    yield dropped_frame(
                        self.position,
                        "shutdown",
                        "this gateway is shutting down; reconnect to resume from here",
                        0,
                    )
                    return
                if self._overflowed:
                    yield dropped_frame(
                        self.position,
                        "slow_client",
                        "the client did not read fast enough and its buffer filled; "
                        "reconnect to resume from here",
                        self._dropped,
                    )
                    return
                if self._resync:
                    self._resync = False
                    async for chunk in self._catch_up(self._feed.head):
                        yield chunk
                    continue
                if not self._queue:
                    self._wake.clear()
                    try:
                        async with asyncio.timeout(self._limits.heartbeat_seconds):
                            await self._wake.wait()
                    except TimeoutError:
                        yield heartbeat_frame(self.position)
                    continue
                async for chunk in self._deliver(self._queue.popleft()):
                    yield chunk
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("tail catch-up for %s failed: %s", self.tenant_id, exc)
            yield dropped_frame(
                self.position,
                "unavailable",
                "the log store is unavailable; reconnect to resume from here",
                None,
            )

    async def _deliver(self, item: _Live | _Quiet | _Head) -> AsyncIterator[bytes]:
        pos = self.position
        if isinstance(item, _Head):
            if Position(item.seq) > pos:
                async for chunk in self._catch_up(item.seq):
                    yield chunk
            return
        if isinstance(item, _Quiet):
            if Position(item.last) <= pos:
                return
            if item.first > pos.seq + 1 or (item.first == pos.seq + 1 and not pos.at_end):
                async for chunk in self._catch_up(item.first - 1):
                    yield chunk
            self.position = Position(item.last)
            return
        self._queued_events -= len(item.indexes)
        seq = item.batch.seq
        if Position(seq) <= pos:
            return
        if seq == pos.seq:  # resumed inside this commit: only what follows
            indexes = [i for i in item.indexes if i > pos.index]
            chunks = join_chunks(item.batch.frame(i) for i in indexes)
        else:
            if seq > pos.seq + 1 or not pos.at_end:
                async for chunk in self._catch_up(seq - 1):
                    yield chunk
            indexes, chunks = item.indexes, item.chunks
        TAIL_EVENTS_SENT.inc(len(indexes))
        for chunk in chunks:
            yield chunk
        self.position = Position(seq)

    async def _catch_up(self, upto: int) -> AsyncIterator[bytes]:
        """Everything matching after the position, through commit `upto`, from PostgreSQL."""
        self._catching_up = True
        try:
            while self.position < Position(upto) and not self._stopping:
                page = await self._reader.page(self.tenant_id, self.where, self.position, upto)
                if page.missing is not None:
                    first, last = page.missing
                    self.position = max(self.position, Position(last))
                    yield dropped_frame(
                        self.position,
                        "resume_window",
                        f"commits {first} to {last} are older than the resume window "
                        "(TAIL_RESUME_WINDOW) and are not replayed; query the API for "
                        "that time range; the stream goes on from here",
                        None,
                    )
                tenant = self.tenant_id
                frames = (log_frame(tenant, seq, i, r) for seq, i, r in page.entries)
                TAIL_EVENTS_SENT.inc(len(page.entries))
                for chunk in join_chunks(frames):
                    yield chunk
                self.position = max(self.position, page.through)
        finally:
            self._catching_up = False
