"""The log model: levels, the entry as clients send it, and the record as it is stored."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

import msgspec


class Level(enum.IntEnum):
    """The seed's five levels, stored as a small integer so `min_level` is a comparison."""

    DEBUG = 1
    INFO = 2
    WARN = 3
    ERROR = 4
    FATAL = 5

    @classmethod
    def parse(cls, text: str) -> Level:
        """Case-insensitive; common aliases of other loggers are folded in."""
        name = text.strip().upper()
        name = _LEVEL_ALIASES.get(name, name)
        try:
            return cls[name]
        except KeyError:
            raise ValueError(
                f"unknown level {text!r}: expected one of DEBUG, INFO, WARN, ERROR, FATAL"
            ) from None


_LEVEL_ALIASES = {"WARNING": "WARN", "ERR": "ERROR", "CRITICAL": "FATAL", "TRACE": "DEBUG"}
LEVEL_NAMES = tuple(level.name for level in Level)

ShortText = Annotated[str, msgspec.Meta(max_length=128)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class LogEntryIn(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """One entry in the seed's shape, as a client sends it. Lengths are bounded here;
    the rest of validation (level, time window, tenant, metadata size) is in `ingest`."""

    service_name: Name
    level: Annotated[str, msgspec.Meta(min_length=1, max_length=16)]
    message: str
    id: uuid.UUID | None = None
    tenant_id: uuid.UUID | None = None
    timestamp: datetime | None = None
    trace_id: ShortText | None = None
    span_id: ShortText | None = None
    user_id: ShortText | None = None
    request_id: ShortText | None = None
    metadata: dict[str, Any] | None = None
    source: Annotated[str, msgspec.Meta(max_length=512)] | None = None
    host: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    environment: Annotated[str, msgspec.Meta(max_length=64)] | None = None


EntryT = TypeVar("EntryT")


class BatchIn(msgspec.Struct, Generic[EntryT], forbid_unknown_fields=True):
    """The batch body: `{"entries": [...]}` (the handler also takes a bare array)."""

    # EntryT: LogEntryIn to decode the whole batch at once, msgspec.Raw to decode each
    # entry alone and name the bad ones.
    entries: list[EntryT]


class LogRecord(msgspec.Struct, array_like=True):
    """A validated, normalised entry: what travels in the stream and is COPYed.

    array_like keeps the msgpack compact (no field names per row). `metadata` is the
    JSON text, encoded once by the gateway and handed to PostgreSQL as is.
    """

    id: uuid.UUID
    timestamp: datetime
    level: int
    service_name: str
    message: str
    trace_id: str | None
    span_id: str | None
    user_id: str | None
    request_id: str | None
    metadata: bytes | None
    source: str | None
    host: str | None
    environment: str | None


# The stored entry's fields, in LogRecord's order, which is also StoredRow's, the stream
# message's and the writer's COPY column order: declared once (above) and derived from
# here wherever fields are listed (SELECT lists, COPY, the tail's filter, validation).
ENTRY_FIELDS: tuple[str, ...] = LogRecord.__struct_fields__
# The free-text fields: what may not hold NUL, and what an entry's size counts with the
# metadata's JSON text.
TEXT_FIELDS: tuple[str, ...] = tuple(
    name for name in ENTRY_FIELDS if name not in ("id", "timestamp", "level", "metadata")
)


class IngestMessage(msgspec.Struct, array_like=True):
    """One accepted HTTP request: the unit of a stream message and of exactly-once."""

    tenant_id: uuid.UUID
    received_at: datetime
    records: list[LogRecord]


class TracedIngestMessage(IngestMessage):
    """An IngestMessage that carries the request span's W3C trace context (tracing on), for
    the writer's spans to link to. A subclass, not optional fields: the extra elements
    end the msgpack array, so with tracing off a message is byte for byte what it was
    before they existed (msgspec writes nil for an array_like default), and older
    messages, without them, still decode as StoredMessage."""

    traceparent: str
    tracestate: str | None = None


# A LogRecord as the writer reads it back from the stream: the same msgpack array decoded
# as a plain tuple, the id as its 16 bytes. The writer only hands rows on to COPY, so it
# needs no struct or UUID object per row: decoding this way cost a third of decoding
# LogRecords (`make bench-ingest`; README, "Benchmarks"). Fields in LogRecord's order.
StoredRow = tuple[
    bytes,  # id
    datetime,  # timestamp (UTC)
    int,  # level
    str,  # service_name
    str,  # message
    str | None,  # trace_id
    str | None,  # span_id
    str | None,  # user_id
    str | None,  # request_id
    bytes | None,  # metadata, JSON text
    str | None,  # source
    str | None,  # host
    str | None,  # environment
]


class StoredMessage(msgspec.Struct, array_like=True):
    """An IngestMessage as the writer decodes it (records as StoredRow); a
    TracedIngestMessage fills the trace context."""

    tenant_id: uuid.UUID
    received_at: datetime
    records: list[StoredRow]
    traceparent: str | None = None
    tracestate: str | None = None


def entry_size(entry: LogRecord | StoredRow) -> int:
    """An entry's size in bytes: its text fields in UTF-8 plus its metadata's JSON text,
    what varies from one stored entry to another; the same for the gateway's LogRecord
    and the writer's StoredRow. The per-entry limit (MAX_ENTRY_BYTES) compares this; the
    storage figures (log_counts.bytes) add ENTRY_FIXED_BYTES per row.

    The writer calls it for every row it stores: one string is built and it is encoded
    only when not ASCII (`isascii()` reads a flag, `encode()` copies).
    """
    row: StoredRow = entry if isinstance(entry, tuple) else msgspec.structs.astuple(entry)
    (_, _, _, service, message, trace_id, span_id, user_id, request_id,
     metadata, source, host, environment) = row  # fmt: skip
    text = (
        f"{service}{message}{trace_id or ''}{span_id or ''}{user_id or ''}{request_id or ''}"
        f"{source or ''}{host or ''}{environment or ''}"
    )
    size = len(text) if text.isascii() else len(text.encode())
    if metadata:
        size += len(metadata)
    return size


# The fixed-width columns every stored entry has whatever its content: id and tenant_id
# (16 each), timestamp (8), level (2), and padding. Counted in the storage figures, not in
# entry_size: no entry can be smaller, so a limit on them would limit nothing. The
# figure the writer has always added: rollups already written hold it.
ENTRY_FIXED_BYTES = 44


class LogEntryOut(msgspec.Struct):
    """An entry as the API returns it: the seed's shape."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    service_name: str
    level: str
    message: str
    timestamp: datetime
    trace_id: str | None = None
    span_id: str | None = None
    user_id: str | None = None
    request_id: str | None = None
    metadata: dict[str, Any] | None = None
    source: str | None = None
    host: str | None = None
    environment: str | None = None
