"""Live tail on the wire: positions (the SSE `id:`), and the bytes of each SSE event.

A position names a place in one tenant's stream of commits (shared/tail.py): `42-7` is
entry 7 of commit 42, `42` is the end of commit 42. Positions only grow along a stream,
so a client that reconnects with the last one it saw (Last-Event-ID) resumes exactly
after it. Every event carries one: `log` events their entry's, `heartbeat` and `dropped`
events the position the stream has reached.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import msgspec

from services.gateway.metrics import TAIL_DROP_NOTICES, TAIL_DROPPED_EVENTS
from shared.errors import BadRequest, FieldError
from shared.model import LEVEL_NAMES, LogEntryOut, LogRecord

# Larger than any index: "the end of the commit" sorts after each of its entries.
END = 1 << 62
_POSITION = re.compile(r"^(\d{1,18})(?:-(\d{1,9}))?$")


@dataclass(frozen=True, order=True, slots=True)
class Position:
    seq: int
    index: int = END

    @property
    def at_end(self) -> bool:
        return self.index == END

    def __str__(self) -> str:
        return str(self.seq) if self.at_end else f"{self.seq}-{self.index}"

    @classmethod
    def parse(cls, text: str, field: str) -> Position:
        match = _POSITION.match(text.strip())
        if not match:
            raise BadRequest(
                f"{field} is not a tail event id",
                errors=[FieldError(field, "expected an event id such as 42-7 or 42")],
            )
        seq, index = match.groups()
        return cls(int(seq), END if index is None else int(index))


_json = msgspec.json.Encoder()


def log_frame(tenant_id: uuid.UUID, seq: int, index: int, r: LogRecord) -> bytes:
    entry = LogEntryOut(
        id=r.id,
        tenant_id=tenant_id,
        service_name=r.service_name,
        level=LEVEL_NAMES[r.level - 1],
        message=r.message,
        timestamp=r.timestamp.astimezone(UTC),
        trace_id=r.trace_id,
        span_id=r.span_id,
        user_id=r.user_id,
        request_id=r.request_id,
        # The stored JSON text, passed through as is (msgspec encodes a Raw verbatim):
        # the tail never decodes metadata it does not filter on.
        metadata=cast(Any, msgspec.Raw(r.metadata)) if r.metadata is not None else None,
        source=r.source,
        host=r.host,
        environment=r.environment,
    )
    # JSON escapes newlines inside strings, so the entry is always one `data:` line.
    return b"id: %d-%d\nevent: log\ndata: %s\n\n" % (seq, index, _json.encode(entry))


def _frame(event: str, position: Position, data: dict[str, Any]) -> bytes:
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (
        str(position).encode(),
        event.encode(),
        _json.encode(data),
    )


def heartbeat_frame(position: Position) -> bytes:
    return _frame("heartbeat", position, {"time": datetime.now(UTC)})


def opening_frame(position: Position, retry_ms: int) -> bytes:
    """The first bytes of a stream: the reconnect delay, and a heartbeat whose id is the
    starting position, so even a client that saw no log yet resumes without a gap."""
    return b"retry: %d\n" % retry_ms + heartbeat_frame(position)


def dropped_frame(position: Position, reason: str, detail: str, dropped: int | None) -> bytes:
    """Tells the client what it will not get on this stream and where to resume from.
    `dropped` is how many events were discarded, None where it cannot be known. Counted
    in the metrics here, the one place every such event is made (each is made to be sent)."""
    TAIL_DROP_NOTICES.labels(reason).inc()
    if dropped:
        TAIL_DROPPED_EVENTS.inc(dropped)
    return _frame(
        "dropped",
        position,
        {
            "reason": reason,
            "detail": detail,
            "dropped": dropped,
            "resume_from": str(position),
        },
    )
