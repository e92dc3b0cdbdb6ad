"""Entries translated from another protocol (Loki push, NDJSON), on their way into
`Ingestor.batch`, so that they meet the very validation /api/v1/logs/batch applies.

A translator builds `LogEntryIn` structs itself, and building a struct checks nothing
the JSON decoder would (lengths, and no NUL: the fast path trusts a JSON body without a
`\\u0000` escape to hold none). So a translator checks the bounds below as it builds;
when one does not hold, `as_raw` hands every entry over as JSON instead, and the
batch's per-entry decoder names each culprit with its index, field and reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from shared.model import LogEntryIn


def _text_bounds() -> dict[str, tuple[int, int | None]]:
    """(min, max) length of each bounded text field, read from LogEntryIn itself."""
    bounds: dict[str, tuple[int, int | None]] = {}
    info = msgspec.inspect.type_info(LogEntryIn)
    assert isinstance(info, msgspec.inspect.StructType)
    for f in info.fields:
        kinds = f.type.types if isinstance(f.type, msgspec.inspect.UnionType) else (f.type,)
        for kind in kinds:
            if isinstance(kind, msgspec.inspect.StrType) and kind.max_length is not None:
                bounds[f.name] = (kind.min_length or 0, kind.max_length)
    return bounds


TEXT_BOUNDS = _text_bounds()

# Translators build LogEntryIn with positional arguments, in this order: per entry,
# keywords cost several times as much. The order is checked here, once, at import.
ENTRY_FIELDS = (
    "service_name",
    "level",
    "message",
    "id",
    "tenant_id",
    "timestamp",
    "trace_id",
    "span_id",
    "user_id",
    "request_id",
    "metadata",
    "source",
    "host",
    "environment",
)
if LogEntryIn.__struct_fields__ != ENTRY_FIELDS:
    raise ImportError(f"LogEntryIn's fields are now {LogEntryIn.__struct_fields__}")
_encoder = msgspec.json.Encoder()


def text_fits(name: str, value: str | None) -> bool:
    """Whether `value` may be field `name` of an entry as built: within its length
    bounds, and without NUL."""
    if value is None:
        return True
    low, high = TEXT_BOUNDS.get(name, (0, None))
    return low <= len(value) and (high is None or len(value) <= high) and "\x00" not in value


def metadata_fits(metadata: dict[str, Any] | None) -> bool:
    """A flat metadata object of strings holds no NUL (depth and size are validated
    later, on every path)."""
    if not metadata:
        return True
    return not any("\x00" in k or (isinstance(v, str) and "\x00" in v) for k, v in metadata.items())


def as_raw(entries: Iterable[LogEntryIn | dict[str, Any]]) -> list[msgspec.Raw]:
    """Every entry as its JSON text, for `Ingestor.batch` to decode and check one by one."""
    return [msgspec.Raw(_encoder.encode(entry)) for entry in entries]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_from_timestamp = datetime.fromtimestamp
# A time beyond what datetime holds: outside every accepted window, so validation
# refuses the entry as too old or too far ahead, as it would any such time.
_BEFORE_ALL = datetime.min.replace(tzinfo=UTC)
_AFTER_ALL = datetime.max.replace(tzinfo=UTC)


def from_micros(micros: int) -> datetime:
    """A Unix time in microseconds as a UTC datetime (protocols send integers)."""
    try:
        return _EPOCH + timedelta(0, 0, micros)  # positional: keywords cost a third more
    except OverflowError:
        return _BEFORE_ALL if micros < 0 else _AFTER_ALL


def seconds_as_time(seconds: float) -> datetime:
    """A Unix time in seconds (a float, as agents send it) as a UTC datetime, to the
    nearest microsecond. Between the years 1780 and 2160 a time in whole microseconds
    comes back exactly (tests/test_ndjson.py); fromtimestamp costs half of from_micros."""
    try:
        return _from_timestamp(seconds, UTC)
    except (OverflowError, ValueError, OSError):
        return _BEFORE_ALL if seconds < 0 else _AFTER_ALL
