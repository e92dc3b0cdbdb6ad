"""POST /v1/logs and /api/v1/otlp/v1/logs: OTLP/HTTP logs, for OpenTelemetry SDKs and
the Collector's `otlphttp` exporter (which append /v1/logs to the base URL they are
given). Protobuf or JSON, optionally gzip- or deflate-encoded; answers and errors in
OTLP's shapes (responses.py), the records through the one ingest pipeline (export.py).

The caller is authenticated as on every route (services/gateway/auth.py): an API key in
`Authorization: Bearer` or `X-API-Key` (OTEL_EXPORTER_OTLP_HEADERS sends either), or
X-Tenant-ID in trusted_header mode.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import psycopg
from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    RequestBody,
    Schema,
)
from litestar.types import ExceptionHandlersMap

from services.gateway.auth import OPENAPI_SECURITY, Caller, require_named_tenant
from services.gateway.content_type import MEDIA_TYPES_OPT
from services.gateway.ingest.accept import Ingestor
from services.gateway.ingest.routes import INGEST_DEPENDENCIES, read_body
from services.gateway.openapi import OwnErrorShape, json_schema
from services.gateway.otlp import responses
from services.gateway.otlp.body import JSON, MEDIA_TYPES, PROTOBUF, decoded_body, encoding_of
from services.gateway.otlp.export import accept_export
from services.gateway.otlp.json_model import JsonLogsRequest, JsonLogsResponse, JsonStatus
from shared.errors import ServiceError, UnsupportedMediaType

PATHS = ["/v1/logs", "/api/v1/otlp/v1/logs"]


def _database_unavailable(
    request: Request[Any, Any, Any], exc: psycopg.OperationalError
) -> Response[bytes]:
    """The tenant's limits could not be read: retryable, as everywhere (problems.py)."""
    return responses.failed(
        responses.request_encoding(request),
        503,
        "the database is unavailable; retry shortly",
        {"Retry-After": "2"},
    )


ERROR_HANDLERS: ExceptionHandlersMap = {
    ServiceError: responses.service_error_handler,
    HTTPException: responses.http_exception_handler,
    psycopg.OperationalError: _database_unavailable,
    Exception: responses.internal_error_handler,
}


def _binary() -> Schema:
    return Schema(type=OpenAPIType.STRING, format="binary")  # type: ignore[arg-type]


def _answer(description: str, json_model: Any) -> OpenAPIResponse:
    return OpenAPIResponse(
        description=description,
        content={
            PROTOBUF: OpenAPIMediaType(schema=_binary()),
            JSON: OpenAPIMediaType(schema=json_schema(json_model)),
        },
    )


@dataclasses.dataclass
class ExportOperation(OwnErrorShape):
    """The export as documented: two encodings in, OTLP's answers out."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="An ExportLogsServiceRequest: protobuf (application/x-protobuf) "
            "or the OTLP JSON mapping (application/json: hex ids, 64-bit integers as "
            "strings, lowerCamelCase). Content-Encoding gzip or deflate optional.",
            content={JSON: OpenAPIMediaType(schema=json_schema(JsonLogsRequest))},
        )
        status = "A google.rpc.Status saying why, in the request's encoding"
        self.responses = {
            "200": _answer(
                "Queued, stored exactly once; `partialSuccess` counts the refused records "
                "and says why",
                JsonLogsResponse,
            ),
            "400": _answer(
                f"The body does not decode, or no record is valid. {status}", JsonStatus
            ),
            "401": _answer(
                f"No valid API key (trusted_header: no X-Tenant-ID). {status}", JsonStatus
            ),
            "403": _answer(f"The key lacks the ingest scope. {status}", JsonStatus),
            "413": _answer(f"Over the tenant's body or batch limits. {status}", JsonStatus),
            "415": _answer(f"Another Content-Type or Content-Encoding. {status}", JsonStatus),
            "429": _answer(f"The tenant's ingest rate; see Retry-After. {status}", JsonStatus),
            "503": _answer(f"Queue full or unreachable; see Retry-After. {status}", JsonStatus),
            "default": _answer(status, JsonStatus),
        }


@post(
    PATHS,
    status_code=200,
    summary="OTLP/HTTP logs (OpenTelemetry SDKs and Collector)",
    description='The OTLP logs export; the mapping to entries is in the README ("OTLP").',
    operation_class=ExportOperation,
    opt={MEDIA_TYPES_OPT: MEDIA_TYPES},
    dependencies=INGEST_DEPENDENCIES,
    exception_handlers=ERROR_HANDLERS,
    security=OPENAPI_SECURITY,
    tags=["ingest"],
)
async def export_logs(
    request: Request[Any, Any, Any],
    caller: NamedDependency[Caller],
    ingestor: NamedDependency[Ingestor],
) -> Response[bytes]:
    caller.require("ingest")
    require_named_tenant(request, caller)
    encoding = encoding_of(request.headers.get("content-type"))
    if encoding is None:  # the guard let only MEDIA_TYPES through
        raise UnsupportedMediaType(f"send one of {', '.join(MEDIA_TYPES)}")
    tenant, body, idem_key = await read_body(request, caller, ingestor)
    limit = tenant.limits.max_body_bytes
    data = decoded_body(body, request.headers.get("content-encoding"), limit)
    return await accept_export(ingestor, tenant, encoding, data, idem_key)
