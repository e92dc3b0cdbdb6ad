"""Every error response is RFC 9457 problem JSON; nothing internal reaches a client."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from shared.errors import FieldError, ServiceError

log = logging.getLogger("gateway.errors")

PROBLEM_MEDIA_TYPE = "application/problem+json"


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    code: str,
    instance: str | None = None,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response[bytes]:
    body: dict[str, Any] = {
        "type": f"https://minisource.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = errors
    if extra:
        body.update(extra)
    return Response(
        content=msgspec.json.encode(body),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def service_error_handler(request: Request[Any, Any, Any], exc: ServiceError) -> Response[bytes]:
    headers = dict(exc.headers)
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    return problem_response(
        exc.status,
        exc.title,
        exc.detail,
        code=exc.code,
        instance=request.url.path,
        errors=exc.errors,
        headers=headers or None,
        extra=exc.extra,
    )


def http_exception_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """Litestar's own errors (unknown route, wrong method, bad parameter) as problems."""
    errors: list[FieldError] = []
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        for item in exc.extra:
            if isinstance(item, dict):
                errors.append(
                    FieldError(field=str(item.get("key", "")), reason=str(item.get("message", "")))
                )
    status = exc.status_code
    code = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}.get(
        status, "bad-request" if status < 500 else "internal"
    )
    return problem_response(
        status,
        _TITLES.get(status, "Error"),
        str(exc.detail),
        code=code,
        instance=request.url.path,
        errors=errors,
        headers=exc.headers,
    )


def recursion_error_handler(
    request: Request[Any, Any, Any], exc: RecursionError
) -> Response[bytes]:
    """msgspec refuses JSON nested deeper than the interpreter's recursion limit with a
    RecursionError (not a DecodeError), wherever a body is decoded: that is the
    client's malformed input, a 400. Any other RecursionError is a bug."""
    if "while deserializing" not in str(exc):
        return internal_error_handler(request, exc)
    return problem_response(
        400,
        _TITLES[400],
        "the JSON is nested too deeply",
        code="bad-request",
        instance=request.url.path,
    )


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """A bug: log it with a correlation id the client can quote; say nothing else."""
    correlation_id = str(uuid.uuid4())
    log.exception("unhandled error %s on %s %s", correlation_id, request.method, request.url.path)
    return problem_response(
        500,
        "Internal error",
        f"An unexpected error occurred; quote correlation id {correlation_id}.",
        code="internal",
        instance=request.url.path,
        extra={"correlation_id": correlation_id},
    )


_TITLES = {
    400: "Bad request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Validation failed",
    429: "Too many requests",
    503: "Service unavailable",
}
