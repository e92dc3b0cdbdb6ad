"""A decoded Loki push (JSON or protobuf) turned into our entries.

Each stream's labels are mapped once (labels.py); each line becomes one entry with the
stream's fields, its own timestamp and its structured metadata. Loki's timestamps are
nanoseconds; ours are microseconds (PostgreSQL's timestamptz), so the last three digits
are dropped.

This runs once per line: what can be done once is. An agent sends the same label sets
push after push, so a stream's mapping is cached by its label text; whether any text
may hold NUL is decided once per body (`may_hold_nul`), not per string.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.gateway.ingest.levels import level_name
from services.gateway.ingest.translated import ENTRY_FIELDS, TEXT_BOUNDS, metadata_fits, text_fits
from services.gateway.loki.labels import (
    DEFAULT_LEVEL,
    FIELD_LABELS,
    UNKNOWN_SERVICE,
    LabelMapping,
    map_labels,
    parse_labels,
)
from services.gateway.wire._protowire import loki_entries
from shared.model import LogEntryIn

# The longest value each id field takes (trace_id: 128, …).
_FIELD_BOUNDS = {
    target: TEXT_BOUNDS[target][1] or 0
    for target in {*FIELD_LABELS.values(), "host", "environment"}
}


# An entry as the protobuf reader gives it, and as the JSON decoder's are made: its time
# (from_micros), its line, and its structured metadata flat, (name, value, name, value,
# ...) in the order sent (None: none).
Entry = tuple[datetime, str, Sequence[str] | None]

# Where each field an entry's labels or structured metadata fill goes among LogEntryIn's
# positional arguments (translated.py's ENTRY_FIELDS).
_LEVEL, _MESSAGE = ENTRY_FIELDS.index("level"), ENTRY_FIELDS.index("message")
_TIMESTAMP, _METADATA = ENTRY_FIELDS.index("timestamp"), ENTRY_FIELDS.index("metadata")
_POSITIONS = {
    target: ENTRY_FIELDS.index(target) for target in {*FIELD_LABELS.values(), "host", "environment"}
}
# The longest value of each of LogEntryIn's arguments that structured metadata can fill.
_BOUNDS = tuple(
    _FIELD_BOUNDS.get(name, sys.maxsize) if name in _POSITIONS else sys.maxsize
    for name in ENTRY_FIELDS
)
_LAYOUT = (_TIMESTAMP, _MESSAGE, _LEVEL, _METADATA)


@dataclass(frozen=True, slots=True)
class Stream:
    """One stream's mapped labels: what every entry of it shares. Shared by the entries
    (and, cached, by later pushes): never changed once made."""

    service_name: str
    level: str
    environment: str | None
    host: str | None
    fields: dict[str, Any]  # id fields by name (trace_id, …): keyword arguments of LogEntryIn
    metadata: dict[str, str] | None
    fits: bool  # every label value within its field's bounds, none with NUL

    def arguments(self) -> list[Any]:
        """LogEntryIn's positional arguments (ENTRY_FIELDS) that every entry of the
        stream starts from; each line fills in its time and text, and more."""
        shared = {
            **self.fields,
            "service_name": self.service_name,
            "level": self.level,
            "metadata": self.metadata,
            "host": self.host,
            "environment": self.environment,
        }
        return [shared.get(name) for name in ENTRY_FIELDS]


def stream_of(labels: dict[str, str], mapping: LabelMapping) -> Stream:
    mapped = map_labels(labels, mapping)
    service = mapped.service_name or UNKNOWN_SERVICE
    fits = (
        text_fits("service_name", service)
        and text_fits("host", mapped.host)
        and text_fits("environment", mapped.environment)
        and all(text_fits(name, value) for name, value in mapped.fields.items())
        and metadata_fits(mapped.metadata)
    )
    return Stream(
        service,
        mapped.level or DEFAULT_LEVEL,
        mapped.environment,
        mapped.host,
        mapped.fields,
        mapped.metadata or None,
        fits,
    )


# Label texts up to this long are cached (4,096 of them): agents' label sets are a few
# hundred bytes, and the bound keeps what a hostile client can park here to ~10 MB.
_CACHED_TEXT = 1024


def stream_of_text(text: str, mapping: LabelMapping) -> Stream:
    """The stream of a label text as Promtail and Alloy send it (a bad text raises each
    time: errors are not cached)."""
    if len(text) > _CACHED_TEXT:
        return stream_of(parse_labels(text), mapping)
    return _cached_stream(text, mapping)


@functools.lru_cache(maxsize=4096)
def _cached_stream(text: str, mapping: LabelMapping) -> Stream:
    return stream_of(parse_labels(text), mapping)


@dataclass(slots=True)
class Translated:
    """The entries of a push, in order, and where each came from (to name it in errors).
    `fits` says every value is within LogEntryIn's bounds and holds no NUL: the entries
    may go to the batch's typed path (services/gateway/ingest/translated.py)."""

    entries: list[LogEntryIn] = field(default_factory=list)
    fits: bool = True
    streams: list[tuple[str, int]] = field(default_factory=list)  # (labels, entries)

    def where(self, index: int) -> str:
        """ "entry 2 of stream {app="api"}" for the entry at `index` of the push."""
        for labels, count in self.streams:
            if index < count:
                return f"entry {index} of stream {labels}"
            index -= count
        return f"entry {index}"


class Translator:
    """Builds a push's entries, stream by stream. `may_hold_nul` False says the body
    cannot hold a NUL character (no zero byte in a protobuf body, no `\\u0000` escape in
    JSON): then no line or value needs checking for one."""

    def __init__(self, mapping: LabelMapping, *, may_hold_nul: bool = True) -> None:
        self.mapping = mapping
        self.may_hold_nul = may_hold_nul
        self.out = Translated()
        self._stream: Stream | None = None
        self._level_keys = frozenset(mapping.level)
        # Each name that fills a field → the field's position among LogEntryIn's arguments.
        self._positions = {
            name: _POSITIONS[target]
            for name, target in {
                **{name: "environment" for name in mapping.environment},
                **{name: "host" for name in mapping.host},
                **FIELD_LABELS,
            }.items()
        }

    def stream(self, stream: Stream, text: str, entries: int) -> None:
        """Start a stream: its mapping, and its labels as text (for error messages)."""
        self._stream = stream
        self.out.fits = self.out.fits and stream.fits
        self.out.streams.append((text, entries))

    def entries(self, entries: Sequence[Entry]) -> None:
        """The current stream's lines, as LogEntryIn, in C (services/gateway/wire/).
        Per line: its time and text over the stream's fields; then its structured
        metadata over them, pair by pair in the order sent (the last of a name wins):
        a name that fills a field (an id, host, environment; high-cardinality values
        belong here rather than in labels) sets it when the value is not empty, a level
        name with a level we know sets the level, and the rest joins the metadata (over
        a label of the same name). Bounds are checked, and NUL when the body may hold
        it; what does not fit leaves `out.fits` False."""
        stream = self._stream
        assert stream is not None, "entries() before stream()"
        fits = loki_entries(
            entries,
            stream.arguments(),
            self._positions,
            _BOUNDS,
            self._level_keys,
            level_name,
            stream.metadata,
            LogEntryIn,
            self.out.entries,
            self.may_hold_nul,
            _LAYOUT,
        )
        if not fits:
            self.out.fits = False
