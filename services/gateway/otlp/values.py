"""OTLP `AnyValue`s of the OTLP JSON mapping (json_model.py) as Python values; the
protobuf ones are decoded by the C reader (services/gateway/wire/), to the same values.

A value becomes what it is in JSON: a string, a bool, an int, a float, a list; a
key-value list becomes a dict; bytes stay bytes (JSON text: base64). An absent value
is None.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from services.gateway.otlp.json_model import JsonAnyValue, JsonKeyValue


class UndecodableValue(ValueError):
    """The value is no AnyValue (a nested value of another shape, a double that is not
    one, a resource that does not decode, ...)."""


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
