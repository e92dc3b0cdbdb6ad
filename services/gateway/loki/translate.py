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
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from services.gateway.ingest.levels import level_name
from services.gateway.ingest.translated import TEXT_BOUNDS, from_micros, metadata_fits, text_fits
from services.gateway.loki.labels import (
    DEFAULT_LEVEL,
    FIELD_LABELS,
    UNKNOWN_SERVICE,
    LabelMapping,
    map_labels,
    parse_labels,
)
from shared.model import LogEntryIn

# The longest value each id field takes (trace_id: 128, …).
_FIELD_BOUNDS = {
    target: TEXT_BOUNDS[target][1] or 0
    for target in {*FIELD_LABELS.values(), "host", "environment"}
}


class LabelPair(NamedTuple):
    """A structured metadata pair, as the protobuf's LabelPairAdapter reads (its
    messages are handed over as parsed: no copy per pair)."""

    name: str
    value: str


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
        self._field_keys = {
            **{name: "environment" for name in mapping.environment},
            **{name: "host" for name in mapping.host},
            **FIELD_LABELS,
        }

    def stream(self, stream: Stream, text: str, entries: int) -> None:
        """Start a stream: its mapping, and its labels as text (for error messages)."""
        self._stream = stream
        self.out.fits = self.out.fits and stream.fits
        self.out.streams.append((text, entries))

    def entry(self, micros: int, line: str, structured: Iterable[LabelPair] | None) -> None:
        """One line; `structured` is its structured metadata (protobuf LabelPairAdapters
        as parsed, or LabelPairs), None when it has none."""
        stream = self._stream
        assert stream is not None, "entry() before stream()"
        if self.may_hold_nul and "\x00" in line:
            self.out.fits = False
        if structured is None:
            self.out.entries.append(
                LogEntryIn(
                    stream.service_name,
                    stream.level,
                    line,
                    timestamp=from_micros(micros),
                    metadata=stream.metadata,
                    host=stream.host,
                    environment=stream.environment,
                    **stream.fields,
                )
            )
            return
        level, fields, metadata = self._structured(stream, structured)
        self.out.entries.append(
            LogEntryIn(
                stream.service_name,
                level,
                line,
                timestamp=from_micros(micros),
                metadata=metadata,
                **fields,
            )
        )

    def _structured(
        self, stream: Stream, pairs: Iterable[LabelPair]
    ) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
        """An entry's structured metadata over its stream's labels: a level key (with a
        name we know) sets the level, id, host and environment keys fill their fields
        (high-cardinality values belong here rather than in labels), the rest joins the
        metadata (over a label of the same name)."""
        level = stream.level
        fields = {**stream.fields, "host": stream.host, "environment": stream.environment}
        metadata: dict[str, Any] | None = None
        fits = True
        for pair in pairs:
            name, value = pair.name, pair.value
            target = self._field_keys.get(name)
            if target is not None and value:
                fields[target] = value
                fits = fits and len(value) <= _FIELD_BOUNDS[target]
                continue
            if name in self._level_keys and (known := level_name(value)) is not None:
                level = known
                continue
            if metadata is None:
                metadata = dict(stream.metadata) if stream.metadata else {}
            metadata[name] = value
        if self.may_hold_nul:
            fits = fits and metadata_fits(metadata) and metadata_fits(fields)
        if not fits:
            self.out.fits = False
        return level, fields, metadata if metadata is not None else stream.metadata
