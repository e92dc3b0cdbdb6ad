"""Turn what a client sent into validated LogRecords, or say precisely what is wrong.

Nothing is guessed: a value that does not fit is refused with its field and reason,
never truncated or coerced silently. Decoding is fast-pathed: the whole body is decoded
at once, and only when that fails is each entry decoded alone to find the culprits.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import msgspec

from services.gateway.ingest.ids import uuid7, uuid7_batch
from shared.errors import FieldError
from shared.model import TEXT_FIELDS, Level, LogEntryIn, LogRecord
from shared.settings import Settings

_entry_decoder = msgspec.json.Decoder(LogEntryIn)
_entries_decoder = msgspec.json.Decoder(list[LogEntryIn])
_json_encoder = msgspec.json.Encoder()
_FIELD_IN_ERROR = re.compile(r"at `\$(?:\[\d+\])?\.?([A-Za-z_][\w.]*)?")
_NAMED_FIELD = re.compile(r"field `([^`]+)`")


@dataclass(slots=True)
class Validated:
    records: list[LogRecord] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)  # position in the request of each record
    errors: list[FieldError] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Limits:
    max_message_bytes: int
    max_metadata_bytes: int
    max_metadata_keys: int
    max_metadata_depth: int
    max_age: timedelta
    max_future: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_message_bytes=settings.max_message_bytes,
            max_metadata_bytes=settings.max_metadata_bytes,
            max_metadata_keys=settings.max_metadata_keys,
            max_metadata_depth=settings.max_metadata_depth,
            max_age=timedelta(days=settings.max_age_days),
            max_future=timedelta(minutes=settings.ingest_max_future_minutes),
        )


class EntryRejected(Exception):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def decode_error(exc: Exception) -> FieldError:
    """msgspec says `Expected str, got int - at $.level`: split into field and reason."""
    text = str(exc)
    match = _FIELD_IN_ERROR.search(text)
    path = (match.group(1) or "") if match else ""
    reason = text.split(" - at ")[0]
    named = _NAMED_FIELD.search(reason)  # "Object missing required field `level`"
    if named:
        path = f"{path}.{named.group(1)}" if path else named.group(1)
    return FieldError(field=path or "$", reason=reason)


def validate_entries(
    raw_entries: Iterable[msgspec.Raw | bytes],
    tenant_id: uuid.UUID,
    limits: Limits,
    now: datetime | None = None,
) -> Validated:
    window = _window(now, limits)
    out = Validated()
    for index, raw in enumerate(raw_entries):
        try:
            entry = _entry_decoder.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
            error = decode_error(exc)
            error.index = index
            out.errors.append(error)
            continue
        _check_one(out, index, entry, tenant_id, limits, window, uuid7, may_hold_nul=True)
    return out


def validate_decoded(
    entries: list[LogEntryIn],
    tenant_id: uuid.UUID,
    limits: Limits,
    now: datetime | None = None,
    *,
    may_hold_nul: bool = True,
) -> Validated:
    """The fast path: entries already decoded together. `may_hold_nul` False says the
    body they came from has no `\\u0000` escape, the only way JSON text can carry NUL:
    then no field needs checking for it."""
    window = _window(now, limits)
    out = Validated()
    new_id = iter(uuid7_batch(len(entries))).__next__
    for index, entry in enumerate(entries):
        _check_one(out, index, entry, tenant_id, limits, window, new_id, may_hold_nul)
    return out


def may_hold_nul(body: bytes) -> bool:
    """False when JSON `body` cannot decode to a string holding NUL (see validate_decoded)."""
    return b"\\u0000" in body


def decode_batch(body: bytes) -> list[LogEntryIn] | None:
    """Decode a JSON array of entries in one pass; None when any entry is malformed."""
    try:
        return _entries_decoder.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
        return None


class _Window(NamedTuple):
    """The accepted timestamps of one request: computed once, compared per entry."""

    now: datetime
    oldest: datetime
    latest: datetime


def _window(now: datetime | None, limits: Limits) -> _Window:
    now = now or datetime.now(UTC)
    return _Window(now, now - limits.max_age, now + limits.max_future)


def _check_one(
    out: Validated,
    index: int,
    entry: LogEntryIn,
    tenant_id: uuid.UUID,
    limits: Limits,
    window: _Window,
    new_id: Callable[[], uuid.UUID],
    may_hold_nul: bool,
) -> None:
    try:
        record = to_record(entry, tenant_id, limits, window, new_id, may_hold_nul=may_hold_nul)
    except EntryRejected as exc:
        out.errors.append(FieldError(field=exc.field, reason=exc.reason, index=index))
        return
    out.records.append(record)
    out.indexes.append(index)


# The spellings clients actually send, looked up before the general parse.
_LEVEL_BY_TEXT = {
    spelling: int(level)
    for level in Level
    for spelling in (level.name, level.name.lower(), level.name.capitalize())
}


def to_record(
    entry: LogEntryIn,
    tenant_id: uuid.UUID,
    limits: Limits,
    window: _Window,
    new_id: Callable[[], uuid.UUID] = uuid7,
    *,
    may_hold_nul: bool = True,
) -> LogRecord:
    # This runs once per entry on the ingest path: written for speed (dict lookups before
    # parsing, bounds computed once per request in `window`, positional construction).
    level = _LEVEL_BY_TEXT.get(entry.level)
    if level is None:
        try:
            level = int(Level.parse(entry.level))
        except ValueError as exc:
            raise EntryRejected("level", str(exc)) from None
    if entry.tenant_id is not None and entry.tenant_id != tenant_id:
        raise EntryRejected("tenant_id", "does not match the tenant of the request")
    message = entry.message
    if not message or message.isspace():
        raise EntryRejected("message", "must not be empty")
    # A character is at most 4 bytes in UTF-8: most messages need no encoding to check.
    if len(message) * 4 > limits.max_message_bytes and (
        len(message.encode()) > limits.max_message_bytes
    ):
        raise EntryRejected("message", f"longer than {limits.max_message_bytes} bytes")
    if may_hold_nul:
        for name in TEXT_FIELDS:
            _check_text(name, getattr(entry, name))
    timestamp = entry.timestamp
    if timestamp is None:
        timestamp = window.now
    elif timestamp.tzinfo is None:
        raise EntryRejected("timestamp", "must be RFC 3339 with a time zone (Z or +hh:mm)")
    else:
        if timestamp < window.oldest:
            raise EntryRejected(
                "timestamp",
                f"older than the accepted window of {limits.max_age.days} days",
            )
        if timestamp > window.latest:
            raise EntryRejected(
                "timestamp",
                f"more than {int(limits.max_future.total_seconds() // 60)} minutes in the future",
            )
        if timestamp.tzinfo is not UTC:
            timestamp = timestamp.astimezone(UTC)
    return LogRecord(
        entry.id or new_id(),
        timestamp,
        level,
        entry.service_name,
        message,
        entry.trace_id or None,
        entry.span_id or None,
        entry.user_id or None,
        entry.request_id or None,
        _metadata_json(entry.metadata, limits, may_hold_nul) if entry.metadata else None,
        entry.source or None,
        entry.host or None,
        entry.environment or None,
    )


def _check_text(name: str, value: str | None) -> None:
    """PostgreSQL text and jsonb cannot hold NUL: refuse it here, not in the writer.
    (Unpaired surrogates never get this far: msgspec refuses them while decoding.)"""
    if value is not None and "\x00" in value:
        raise EntryRejected(name, "must not contain NUL characters")


def _metadata_json(metadata: dict[str, Any], limits: Limits, may_hold_nul: bool = True) -> bytes:
    if len(metadata) > limits.max_metadata_keys:
        raise EntryRejected("metadata", f"more than {limits.max_metadata_keys} keys")
    encoded = _json_encoder.encode(metadata)
    # Fast path: fewer brackets than the depth limit cannot nest too deep, and NUL is
    # always escaped as \u0000 in JSON text. Only a suspect value is walked, to name the
    # offending field precisely.
    brackets = encoded.count(b"{") + encoded.count(b"[")
    if brackets > limits.max_metadata_depth or (may_hold_nul and b"\\u0000" in encoded):
        _check_json_value(metadata, 1, limits.max_metadata_depth, "metadata")
    if len(encoded) > limits.max_metadata_bytes:
        raise EntryRejected("metadata", f"larger than {limits.max_metadata_bytes} bytes as JSON")
    return encoded


def _check_json_value(value: Any, depth: int, max_depth: int, path: str) -> None:
    if isinstance(value, str):
        _check_text(path, value)
    elif isinstance(value, dict):
        if depth > max_depth:
            raise EntryRejected(path, f"nested deeper than {max_depth} levels")
        for key, item in value.items():
            _check_text(f"{path}.{key}", key)
            _check_json_value(item, depth + 1, max_depth, f"{path}.{key}")
    elif isinstance(value, list):
        if depth > max_depth:
            raise EntryRejected(path, f"nested deeper than {max_depth} levels")
        for i, item in enumerate(value):
            _check_json_value(item, depth + 1, max_depth, f"{path}[{i}]")
