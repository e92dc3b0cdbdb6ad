"""One tenant's live commits in one gateway: published messages put back in commit order
and offered to that tenant's tail clients.

Publishes can arrive out of order (several writers) or not at all (Redis hiccup, the
subscription reconnecting, a message too large to publish). The feed waits GAP_GRACE
for a missing commit's message; after that it tells its clients that commits up to a
number exist, and each client reads what it lacks from PostgreSQL. Work shared by all
clients is done once per commit: the SSE bytes of each entry, and what each distinct
filter selects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from services.gateway.tail.events import log_frame
from shared.filters import CompiledFilter, matches
from shared.model import ENTRY_FIELDS, LogRecord
from shared.tail import TailMessage, decode_tail_message

log = logging.getLogger("gateway.tail")

GAP_GRACE_SECONDS = 0.25
# Published messages waiting to be decoded, per tenant: past this the newest are dropped
# (and read from PostgreSQL later) rather than held.
INBOX_MAX_BYTES = 32 * 1024 * 1024
# SSE events are written to the socket in pieces of about this size.
CHUNK_BYTES = 256 * 1024
_MATCH_ALL = CompiledFilter()
_COLUMNS = frozenset(ENTRY_FIELDS)
_UNSET: Any = object()


class _RecordView(Mapping[str, Any]):
    """A LogRecord as `shared.filters.matches` reads an entry; metadata decoded only when
    a filter asks for it."""

    __slots__ = ("_metadata", "_record")

    def __init__(self, record: LogRecord) -> None:
        self._record = record
        self._metadata = _UNSET

    def __getitem__(self, key: str) -> Any:
        if key == "metadata":
            if self._metadata is _UNSET:
                raw = self._record.metadata
                self._metadata = msgspec.json.decode(raw) if raw is not None else None
            return self._metadata
        if key in _COLUMNS:
            return getattr(self._record, key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(_COLUMNS)

    def __len__(self) -> int:
        return len(_COLUMNS)


def join_chunks(frames: Iterator[bytes]) -> list[bytes]:
    """SSE events joined into writes of about CHUNK_BYTES."""
    chunks: list[bytes] = []
    part: list[bytes] = []
    size = 0
    for frame in frames:
        part.append(frame)
        size += len(frame)
        if size >= CHUNK_BYTES:
            chunks.append(b"".join(part))
            part, size = [], 0
    if part:
        chunks.append(b"".join(part))
    return chunks


@dataclass(frozen=True, slots=True)
class Selection:
    """The entries of one commit a filter selects (indexes) and their events, chunked."""

    indexes: list[int]
    chunks: list[bytes]


class LiveBatch:
    """One published commit of one tenant, shared by every client of the tenant. The
    events of each entry are kept only while the commit is being offered: afterwards
    clients hold its selections' chunks, not a second copy of every event."""

    def __init__(self, tenant_id: uuid.UUID, seq: int, records: list[LogRecord]) -> None:
        self.tenant_id = tenant_id
        self.seq = seq
        self.records = records
        self._frames: dict[int, bytes] = {}
        self._selections: dict[CompiledFilter, Selection] = {}

    def frame(self, index: int) -> bytes:
        frame = self._frames.get(index)
        if frame is None:
            frame = log_frame(self.tenant_id, self.seq, index, self.records[index])
            self._frames[index] = frame
        return frame

    def offered(self) -> None:
        self._frames.clear()

    def select(self, where: CompiledFilter) -> Selection:
        selection = self._selections.get(where)
        if selection is None:
            if where == _MATCH_ALL:
                indexes = list(range(len(self.records)))
            else:
                tenant = self.tenant_id
                indexes = [
                    i
                    for i, r in enumerate(self.records)
                    if matches(tenant, where, tenant, _RecordView(r))
                ]
            selection = Selection(indexes, join_chunks(self.frame(i) for i in indexes))
            self._selections[where] = selection
        return selection


class Subscriber(Protocol):
    """What a feed needs of a tail client."""

    def offer(self, batch: LiveBatch) -> None: ...

    def offer_head(self, seq: int) -> None: ...

    def stop(self) -> None: ...


class TenantFeed:
    """Puts one tenant's published commits in order and offers them to its clients."""

    def __init__(self, tenant_id: uuid.UUID) -> None:
        self.tenant_id = tenant_id
        self.clients: set[Subscriber] = set()
        self.next_seq = 0
        self._known = 0
        self._inbox: deque[bytes] = deque()
        self._inbox_bytes = 0
        self._pending: dict[int, TailMessage] = {}
        self._wake = asyncio.Event()
        self._missing_since: float | None = None
        self.dropped_messages = 0

    @property
    def head(self) -> int:
        """Every commit up to this one has been offered, or announced as committed."""
        return self.next_seq - 1

    def start(self, committed: int) -> None:
        """Begin after commit `committed` (read from PostgreSQL once subscribed)."""
        self.next_seq = committed + 1
        self._known = committed

    def push(self, payload: bytes) -> None:
        """A published message for this tenant (from the subscription; never blocks)."""
        if self._inbox_bytes + len(payload) > INBOX_MAX_BYTES:
            self.dropped_messages += 1
            return
        self._inbox.append(payload)
        self._inbox_bytes += len(payload)
        self._wake.set()

    def note_committed(self, seq: int) -> None:
        """PostgreSQL says commit `seq` exists (the poll against lost publishes)."""
        if seq > self._known:
            self._known = seq
            self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            timeout = None
            if self._missing_since is not None:
                timeout = max(0.0, self._missing_since + GAP_GRACE_SECONDS - loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
            try:
                self._read_inbox()
                self._advance(loop.time)
            except Exception:
                # A bug must not silence the tenant's tail: clients that missed a commit
                # read it from PostgreSQL when the next one arrives.
                log.exception("live tail feed of %s failed on a commit", self.tenant_id)

    def _read_inbox(self) -> None:
        while self._inbox:
            payload = self._inbox.popleft()
            self._inbox_bytes -= len(payload)
            try:
                message = decode_tail_message(payload)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.warning("undecodable tail message for %s: %s", self.tenant_id, exc)
                continue
            if message.tenant_id != self.tenant_id or message.seq < self.next_seq:
                continue
            self._pending[message.seq] = message
            self._known = max(self._known, message.seq)

    def _advance(self, now: Callable[[], float]) -> None:
        while True:
            while self.next_seq in self._pending:
                message = self._pending.pop(self.next_seq)
                self.next_seq += 1
                if message.records is None:
                    self._announce(message.seq)
                else:
                    batch = LiveBatch(self.tenant_id, message.seq, message.records)
                    for client in list(self.clients):
                        client.offer(batch)
                    batch.offered()
            if self._known < self.next_seq:
                self._missing_since = None
                return
            if self._missing_since is None:
                self._missing_since = now()
                return
            if now() - self._missing_since < GAP_GRACE_SECONDS:
                return
            # The missing messages are not coming: clients read those commits from
            # PostgreSQL, then the feed goes on with what it holds.
            self._missing_since = None
            upto = min(self._pending) - 1 if self._pending else self._known
            self._announce(upto)
            self.next_seq = upto + 1

    def _announce(self, seq: int) -> None:
        for client in list(self.clients):
            client.offer_head(seq)
