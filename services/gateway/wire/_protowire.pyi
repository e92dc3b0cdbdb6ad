"""Typing of the C extension (_protowire.c)."""

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

MAX_VALUE_DEPTH: int

# (timestamp: the time, else the observed time, else None, as otlp/mapping.py's
#  time_of gives it; severity_number, severity_text, body, attributes, trace_id hex or
#  None, span_id hex or None, event_name, dropped_attributes_count, the attributes'
#  size on the wire in bytes)
OtlpRecord = tuple[
    datetime | None, int, str, Any, dict[str, Any], str | None, str | None, str, int, int
]
# (timestamp, as ingest/translated.py's from_micros gives it; line; structured metadata
#  flat, (name, value, name, value, ...), or None)
LokiEntry = tuple[datetime, str, tuple[str, ...] | None]

def otlp_logs(body: bytes, /) -> tuple[list[tuple[bytes, str, int]], list[OtlpRecord], bool]:
    """An ExportLogsServiceRequest: per ScopeLogs, its Resource's raw bytes, its scope's
    name and its number of records; then every record, in order; then whether a string
    of the records or scopes holds NUL (the resources, returned raw, are not looked at).
    ValueError(reason, record index or None) if malformed."""

def otlp_attributes(resource: bytes, /) -> dict[str, Any]:
    """The attributes of a raw Resource. ValueError(reason) if malformed."""

def loki_push(body: bytes, /) -> list[tuple[str, list[LokiEntry]]]:
    """A logproto.PushRequest: per stream, its labels and entries. ValueError(reason) if
    malformed."""

def loki_entries(
    entries: Sequence[LokiEntry | tuple[datetime, str, Sequence[str] | None]],
    arguments: list[Any],
    positions: dict[str, int],
    bounds: tuple[int, ...],
    level_keys: frozenset[str],
    level_name: Callable[[str], str | None],
    stream_metadata: dict[str, Any] | None,
    entry_type: type[Any],
    out: list[Any],
    check_nul: bool,
    layout: tuple[int, int, int, int],
    /,
) -> bool:
    """One stream's entries as `entry_type(*arguments)` appended to `out`, each over the
    stream's `arguments` (the loop of loki/translate.py's Translator.entries); whether
    every value fits its bound and, when `check_nul`, holds no NUL."""
