"""OTLP/HTTP answers, in the encoding of the request (protobuf unless it was JSON).

Success is 200 with an `ExportLogsServiceResponse`: empty when every record was
accepted, with `partial_success` (how many were rejected, and why) when some were not.
Every error is its HTTP status with a `google.rpc.Status` body, as the OTLP/HTTP
specification asks; 429 and 503 carry Retry-After, which OpenTelemetry exporters honour.
The statuses are the gateway's usual ones (services/gateway/problems.py): the same
refusal has the same status on every route, only the body's shape differs.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from services.gateway.otlp.body import JSON, PROTOBUF, Encoding, encoding_of
from services.gateway.otlp.json_model import JsonLogsResponse, JsonPartialSuccess, JsonStatus
from services.gateway.otlp.wire import LogsResponse, Status
from services.gateway.problems import problem_of, status_of
from shared.errors import ServiceError

log = logging.getLogger("gateway.otlp")

# google.rpc.Code by HTTP status (the gRPC status an OTLP/gRPC server would send).
_RPC_CODES = {
    400: 3,  # INVALID_ARGUMENT
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 5,  # NOT_FOUND
    405: 12,  # UNIMPLEMENTED
    413: 8,  # RESOURCE_EXHAUSTED
    415: 3,
    422: 3,
    429: 8,
    503: 14,  # UNAVAILABLE
}
_INTERNAL = 13
# Error messages are cut here: an exporter logs them whole.
_MAX_MESSAGE = 2000


def exported(encoding: Encoding, rejected: int = 0, message: str = "") -> Response[bytes]:
    """200: the records are queued; `rejected` of them were refused for `message`."""
    if encoding == "json":
        partial = JsonPartialSuccess(str(rejected), message[:_MAX_MESSAGE]) if rejected else None
        body = msgspec.json.encode(JsonLogsResponse(partial))
        return Response(body, status_code=200, media_type=JSON)
    answer = LogsResponse()
    if rejected:
        answer.partial_success.rejected_log_records = rejected
        answer.partial_success.error_message = message[:_MAX_MESSAGE]
    return Response(answer.SerializeToString(), status_code=200, media_type=PROTOBUF)


def failed(
    encoding: Encoding,
    status: int,
    message: str,
    headers: dict[str, str] | None = None,
) -> Response[bytes]:
    """An error: `status` with a google.rpc.Status saying why."""
    code = _RPC_CODES.get(status, _INTERNAL if status >= 500 else 3)
    message = message[:_MAX_MESSAGE]
    if encoding == "json":
        body = msgspec.json.encode(JsonStatus(code, message))
        media_type = JSON
    else:
        body = Status(code=code, message=message).SerializeToString()
        media_type = PROTOBUF
    return Response(body, status_code=status, media_type=media_type, headers=headers)


def request_encoding(request: Request[Any, Any, Any]) -> Encoding:
    """How to answer: as the request was encoded; protobuf (the OTLP default) when its
    Content-Type is neither."""
    return encoding_of(request.headers.get("content-type")) or "protobuf"


def service_error_handler(request: Request[Any, Any, Any], exc: ServiceError) -> Response[bytes]:
    """A refusal (auth, limits, backpressure, a bad body) in OTLP's shape."""
    problem = problem_of(exc.code)
    headers = dict(problem.headers)
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    message = exc.detail
    if exc.errors:
        first = exc.errors[0]
        message += f" ({first.field}: {first.reason})"
    # OTLP has no 422: invalid data is 400, on which exporters drop rather than retry.
    status = 400 if exc.code == "validation-failed" else status_of(exc)
    return failed(request_encoding(request), status, message, headers or None)


def http_exception_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """Litestar's own refusals (a body over MAX_BODY_BYTES, a wrong method)."""
    status = exc.status_code
    message = str(exc.detail)
    if status == 413:
        message = "the request body is larger than the limit (MAX_BODY_BYTES)"
    return failed(request_encoding(request), status, message, exc.headers)


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """A bug: logged with a correlation id the client can quote, nothing else said."""
    correlation_id = str(uuid.uuid4())
    log.exception("unhandled error %s on %s %s", correlation_id, request.method, request.url.path)
    return failed(
        request_encoding(request),
        500,
        f"An unexpected error occurred; quote correlation id {correlation_id}.",
    )
