"""Errors in the OpenAPI document: every operation answers errors as problem JSON.

Litestar documents a 400 of its own shape; our handlers (services/gateway/problems.py)
answer every 4xx/5xx as RFC 9457 problem JSON instead. At start the document is
corrected once: each operation's error responses get the problem schema, and a
`default` response says that any other error status has the same shape, so clients and
fuzzers can rely on the document for errors as for successes.
"""

from __future__ import annotations

from litestar import Litestar
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Reference,
    Schema,
)

from services.gateway.problems import PROBLEM_MEDIA_TYPE

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


def document_problems(app: Litestar) -> None:
    """An on_startup hook: rewrite the (cached) document's error responses."""
    openapi = app.openapi_schema
    openapi.components.schemas = {**(openapi.components.schemas or {}), "Problem": _PROBLEM}
    for path_item in (openapi.paths or {}).values():
        for operation in (path_item.get, path_item.post, path_item.put, path_item.delete):
            if isinstance(operation, Operation):
                _correct(operation)


def _correct(operation: Operation) -> None:
    responses = dict(operation.responses or {})
    for status, response in responses.items():
        if status[:1] in "45" and isinstance(response, OpenAPIResponse):
            responses[status] = _problem_response(response.description)
    responses.setdefault("default", _problem_response("An error, as problem JSON"))
    operation.responses = responses
