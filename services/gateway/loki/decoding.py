"""A Loki push body, decoded: protobuf (snappy-compressed `logproto.PushRequest`, what
Promtail and Alloy send) or JSON (`{"streams": [{"stream": {...}, "values": [...]}]}`).

Either is decoded whole first, so that its number of entries is checked against the
tenant's batch limit before any entry is built; then `translate` feeds a Translator.
A body that does not decode is refused whole (400), as Loki refuses it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from services.gateway.ingest.translated import from_micros
from services.gateway.loki.translate import Translator, stream_of, stream_of_text
from services.gateway.wire._protowire import loki_push
from shared.errors import BadRequest

if TYPE_CHECKING:
    from services.gateway.wire._protowire import LokiEntry

JSON_MEDIA_TYPE = "application/json"
PROTOBUF_MEDIA_TYPE = "application/x-protobuf"


class Push(Protocol):
    """A decoded push: how many entries it holds, whether any of its text may hold NUL
    (the Translator's `may_hold_nul`), and its entries fed to a Translator."""

    may_hold_nul: bool

    def total(self) -> int: ...

    def translate(self, translator: Translator) -> None: ...


class JsonStream(msgspec.Struct, forbid_unknown_fields=True):
    """One stream: labels as an object, values as [time in ns (text), line] or
    [time, line, {structured metadata}]."""

    values: list[list[str | int | dict[str, str]]]
    stream: dict[str, str] = msgspec.field(default_factory=dict)


class JsonPushRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of a JSON push."""

    streams: list[JsonStream]


_json_push = msgspec.json.Decoder(JsonPushRequest)


class _JsonPush:
    def __init__(self, request: JsonPushRequest, may_hold_nul: bool) -> None:
        self.request = request
        self.may_hold_nul = may_hold_nul  # JSON text holds NUL only as a \u0000 escape

    def total(self) -> int:
        return sum(len(stream.values) for stream in self.request.streams)

    def translate(self, translator: Translator) -> None:
        for s, stream in enumerate(self.request.streams):
            labels = stream.stream
            text = "{" + ", ".join(f'{name}="{value}"' for name, value in labels.items()) + "}"
            translator.stream(stream_of(labels, translator.mapping), text, len(stream.values))
            entries = []
            for e, value in enumerate(stream.values):
                micros, line, structured = _json_value(value, s, e)
                flat = (
                    [text for pair in structured.items() for text in pair] if structured else None
                )
                entries.append((from_micros(micros), line, flat))
            translator.entries(entries)


def _json_value(value: list[Any], s: int, e: int) -> tuple[int, str, dict[str, str] | None]:
    """[time, line] or [time, line, {structured metadata}] of streams[s].values[e]."""
    where = f"streams[{s}].values[{e}]"
    if len(value) not in (2, 3):
        raise BadRequest(f"{where}: expected [time in nanoseconds, line] or [time, line, {{…}}]")
    stamp, line = value[0], value[1]
    structured = value[2] if len(value) == 3 else None
    if not isinstance(line, str) or (structured is not None and not isinstance(structured, dict)):
        raise BadRequest(f"{where}: the line must be a string, structured metadata an object")
    if isinstance(stamp, str) and stamp.isascii() and stamp.isdigit() and len(stamp) <= 30:
        nanos = int(stamp)
    elif isinstance(stamp, int) and not isinstance(stamp, bool):
        nanos = stamp
    else:
        raise BadRequest(
            f'{where}: the time must be Unix nanoseconds as a string, e.g. "1700000000000000000"'
        )
    return nanos // 1000, line, structured


class _ProtobufPush:
    def __init__(self, streams: list[tuple[str, list[LokiEntry]]], may_hold_nul: bool) -> None:
        self.streams = streams
        # Text is stored as its UTF-8 bytes, so a NUL in any string is a zero byte of
        # the body. Without any, nothing needs checking (a zero byte elsewhere, e.g. an
        # empty message, only makes the translator check each string).
        self.may_hold_nul = may_hold_nul

    def total(self) -> int:
        return sum(len(entries) for _, entries in self.streams)

    def translate(self, translator: Translator) -> None:
        mapping = translator.mapping
        for labels, entries in self.streams:
            translator.stream(stream_of_text(labels, mapping), labels, len(entries))
            translator.entries(entries)


def decode_json(data: bytes) -> Push:
    if not data.strip():
        raise BadRequest('the request body is empty; send {"streams": [...]}')
    try:
        return _JsonPush(_json_push.decode(data), b"\\u0000" in data)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"not a Loki push request: {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None


def decode_protobuf(data: bytes) -> Push:
    """`data` is the snappy-decoded body, walked by the C reader (services/gateway/wire/),
    which refuses truncated messages, invalid wire types and strings that are not UTF-8."""
    try:
        return _ProtobufPush(loki_push(data), b"\x00" in data)
    except ValueError as exc:
        raise BadRequest(f"the body is not a valid logproto.PushRequest: {exc}") from None
