"""The OpenAPI document's corrections: bodies that handlers read themselves, and errors.

Ingest decodes its body by hand (to report each bad entry of a batch with its index),
so Litestar cannot infer the body's schema: `documented_body(Model)` gives an Operation
class that describes it with the msgspec model's own JSON schema, so the document (and
API fuzzers reading it) know what to send.

Litestar documents a 400 of its own shape; our handlers (services/gateway/problems.py)
answer every 4xx/5xx as RFC 9457 problem JSON instead. At start the document is
corrected once: each operation's error responses get the problem schema, and a
`default` response says that any other error status has the same shape.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
from litestar import Litestar
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    Example,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    RequestBody,
    Schema,
)

from services.gateway.problems import PROBLEM_MEDIA_TYPE

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


def example_response(model: Any, description: str, example: dict[str, Any]) -> ResponseSpec:
    """A documented response with one hand-written example (generated ones are noise)."""
    return ResponseSpec(
        data_container=model,
        description=description,
        generate_examples=False,
        examples=[Example(summary="Example", value=example)],
    )


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


_PROBLEM = Schema(
    type=OpenAPIType.OBJECT,
    description="RFC 9457 problem details. Refusals by a limit add `limit` and "
    "`limit_value`; a 500 adds `correlation_id`.",
    required=["type", "title", "status", "detail"],
    properties={
        "type": Schema(type=OpenAPIType.STRING),
        "title": Schema(type=OpenAPIType.STRING),
        "status": Schema(type=OpenAPIType.INTEGER),
        "detail": Schema(type=OpenAPIType.STRING),
        "instance": Schema(type=OpenAPIType.STRING),
        "errors": Schema(
            type=OpenAPIType.ARRAY,
            items=Schema(
                type=OpenAPIType.OBJECT,
                required=["field", "reason"],
                properties={
                    "field": Schema(type=OpenAPIType.STRING),
                    "reason": Schema(type=OpenAPIType.STRING),
                    "index": Schema(type=OpenAPIType.INTEGER),
                },
            ),
        ),
    },
)


def _problem_response(description: str) -> OpenAPIResponse:
    return OpenAPIResponse(
        description=description,
        content={
            PROBLEM_MEDIA_TYPE: OpenAPIMediaType(schema=Reference("#/components/schemas/Problem"))
        },
    )


class OwnErrorShape(Operation):
    """An operation of another protocol (Loki's push, …) that answers errors in that
    protocol's shape: its operation class derives from this one and documents its own
    responses, which `document_problems` leaves as they are."""


def document_problems(app: Litestar) -> None:
    """An on_startup hook: rewrite the (cached) document's error responses."""
    openapi = app.openapi_schema
    openapi.components.schemas = {**(openapi.components.schemas or {}), "Problem": _PROBLEM}
    for path_item in (openapi.paths or {}).values():
        for operation in (path_item.get, path_item.post, path_item.put, path_item.delete):
            if isinstance(operation, Operation) and not isinstance(operation, OwnErrorShape):
                _correct(operation)


def _correct(operation: Operation) -> None:
    responses = dict(operation.responses or {})
    for status, response in responses.items():
        if status[:1] in "45" and isinstance(response, OpenAPIResponse):
            responses[status] = _problem_response(response.description)
    responses.setdefault("default", _problem_response("An error, as problem JSON"))
    operation.responses = responses
