"""Request-body documentation for handlers that read the raw body themselves.

Ingest decodes the body by hand (to report each bad entry of a batch with its index),
so Litestar cannot infer the body's schema. `documented_body(Model)` gives an Operation
class that describes the body with the msgspec model's own JSON schema, so the OpenAPI
document (and API fuzzers reading it) know what to send.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema

_ALIASES = {
    f.metadata.get("alias", f.name): f.name for f in dataclasses.fields(Schema) if f.metadata
} | {f.name: f.name for f in dataclasses.fields(Schema)}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """Replace `$ref`s into `$defs` by the definitions themselves (no cycles here)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _to_schema(node: dict[str, Any]) -> Schema:
    kwargs: dict[str, Any] = {}
    for key, value in node.items():
        name = _ALIASES.get(key)
        if name is None:
            continue
        if name == "type":
            value = OpenAPIType(value)
        elif name == "properties":
            value = {k: _to_schema(v) for k, v in value.items()}
        elif name in ("items", "additional_properties") and isinstance(value, dict):
            value = _to_schema(value)
        elif name in ("any_of", "one_of", "all_of"):
            value = [_to_schema(v) for v in value]
        kwargs[name] = value
    return Schema(**kwargs)


def json_schema(model: Any) -> Schema:
    raw = msgspec.json.schema(model)
    return _to_schema(_inline(raw, raw.get("$defs", {})))


def documented_body(model: Any, description: str) -> type[Operation]:
    """An Operation subclass whose request body is `model` as JSON."""
    body = RequestBody(
        required=True,
        description=description,
        content={"application/json": OpenAPIMediaType(schema=json_schema(model))},
    )

    @dataclasses.dataclass
    class WithBody(Operation):
        def __post_init__(self) -> None:
            self.request_body = body

    return WithBody
