"""OTLP `AnyValue`s as Python values: from the raw protobuf bytes of the wire view
(wire.py) and from the OTLP JSON mapping (json_model.py).

A value becomes what it is in JSON: a string, a bool, an int, a float, a list; a
key-value list becomes a dict; bytes stay bytes (JSON text: base64). An absent value
is None.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from google.protobuf.message import DecodeError

from services.gateway.otlp.json_model import JsonAnyValue, JsonKeyValue
from services.gateway.otlp.wire import ANY_VALUE_ONEOF, AnyValue

# The first byte of an AnyValue holding a string (field 1, length-delimited) or an int
# (field 3, varint): the two kinds nearly every attribute is.
_STRING_TAG = 0x0A
_INT_TAG = 0x18


class UndecodableValue(ValueError):
    """The bytes are no AnyValue (truncated, a string that is not UTF-8, ...)."""


def from_wire(raw: bytes) -> Any:
    """The value of one raw AnyValue. Strings shorter than 16 KiB and non-negative ints
    below 2**14, checked to span the whole value exactly, are read here; everything
    else by the protobuf parser (which validates it as the generated classes would)."""
    size = len(raw)
    if size > 1:
        tag, length = raw[0], raw[1]
        if tag == _STRING_TAG:
            # Called for nearly every attribute: the decoding is inline, not a call.
            start = 0
            if length < 0x80:
                if size == length + 2:
                    start = 2
            elif size > 2 and raw[2] < 0x80 and size == (length & 0x7F | raw[2] << 7) + 3:
                start = 3
            if start:
                try:
                    return raw[start:].decode()
                except UnicodeDecodeError:
                    raise UndecodableValue("a string value is not valid UTF-8") from None
        elif tag == _INT_TAG:
            # Non-negative ints below 2**14 (line numbers, durations, statuses).
            if length < 0x80:
                if size == 2:
                    return length
            elif size == 3 and raw[2] < 0x80:
                return length & 0x7F | raw[2] << 7
    elif not size:
        return None
    return _parsed(raw)


def _parsed(raw: bytes) -> Any:
    try:
        value = AnyValue.FromString(raw)
    except DecodeError as exc:
        raise UndecodableValue(f"an AnyValue does not decode: {exc}") from None
    kind = value.WhichOneof(ANY_VALUE_ONEOF)
    if kind is None:
        return None
    if kind == "array_value":
        return [from_wire(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: from_wire(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


_any_value = msgspec.json.Decoder(JsonAnyValue)
_key_value = msgspec.json.Decoder(JsonKeyValue)
_T = TypeVar("_T")


def _nested(decoder: msgspec.json.Decoder[_T], raw: msgspec.Raw) -> _T:
    try:
        return decoder.decode(raw)
    except msgspec.DecodeError as exc:  # ValidationError is one
        raise UndecodableValue(f"a nested value does not decode: {exc}") from None


def from_json(value: JsonAnyValue | None) -> Any:
    """The value of an AnyValue in the OTLP JSON mapping (int64 may be a string)."""
    if value is None:
        return None
    if value.string_value is not None:
        return value.string_value
    if value.int_value is not None:
        return int(value.int_value)
    if value.bool_value is not None:
        return value.bool_value
    if value.double_value is not None:
        try:
            return float(value.double_value)
        except ValueError:
            raise UndecodableValue(f"{value.double_value!r} is not a double") from None
    if value.array_value is not None:
        return [from_json(_nested(_any_value, item)) for item in value.array_value.values]
    if value.kvlist_value is not None:
        pairs = (_nested(_key_value, item) for item in value.kvlist_value.values)
        return {kv.key: from_json(kv.value) for kv in pairs}
    if value.bytes_value is not None:
        return value.bytes_value
    return None
