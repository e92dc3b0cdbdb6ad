"""Every error response is RFC 9457 problem JSON; nothing internal reaches a client.

`PROBLEMS` is the one table from a domain error's code (shared/errors.py) to its HTTP
status and title. Litestar's own errors (unknown route, wrong method, a parameter or
body that does not fit its type, a body over MAX_BODY_BYTES) are mapped to the same
codes, so every route answers the same problem for the same mistake.
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec
import msgspec.inspect
import psycopg
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.handlers import HTTPRouteHandler

from shared.errors import FieldError, ServiceError

log = logging.getLogger("gateway.errors")

PROBLEM_MEDIA_TYPE = "application/problem+json"


@dataclass(frozen=True, slots=True)
class Problem:
    status: int
    title: str
    headers: dict[str, str] = field(default_factory=dict)


PROBLEMS: dict[str, Problem] = {
    "bad-request": Problem(400, "Bad request"),
    # RFC 9110: a 401 names the scheme to authenticate with.
    "unauthorized": Problem(
        401, "Authentication required", {"WWW-Authenticate": 'Bearer realm="minisource-log"'}
    ),
    "forbidden": Problem(403, "Forbidden"),
    "not-found": Problem(404, "Not found"),
    "method-not-allowed": Problem(405, "Method not allowed"),
    "conflict": Problem(409, "Conflict"),
    "payload-too-large": Problem(413, "Payload too large"),
    "unsupported-media-type": Problem(415, "Unsupported media type"),
    "validation-failed": Problem(422, "Validation failed"),
    "rate-limited": Problem(429, "Too many requests"),
    "internal": Problem(500, "Internal error"),
    "unavailable": Problem(503, "Service unavailable"),
    "backpressure": Problem(503, "Ingest backlog is full"),
}
_CODE_BY_STATUS = {p.status: code for code, p in reversed(PROBLEMS.items())}


def problem_of(code: str) -> Problem:
    return PROBLEMS.get(code, PROBLEMS["internal"])


def status_of(error: ServiceError) -> int:
    """The HTTP status a domain error is answered with."""
    return problem_of(error.code).status


def problem_response(
    code: str,
    detail: str,
    *,
    instance: str | None = None,
    errors: list[FieldError] | None = None,
    retry_after: int | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response[bytes]:
    problem = problem_of(code)
    body: dict[str, Any] = {
        "type": f"https://minisource.dev/problems/{code}",
        "title": problem.title,
        "status": problem.status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = errors
    if extra:
        body.update(extra)
    all_headers = {**problem.headers, **(headers or {})}
    if retry_after is not None:
        all_headers["Retry-After"] = str(retry_after)
    return Response(
        content=msgspec.json.encode(body),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=all_headers or None,
    )


def service_error_handler(request: Request[Any, Any, Any], exc: ServiceError) -> Response[bytes]:
    return problem_response(
        exc.code,
        exc.detail,
        instance=request.url.path,
        errors=exc.errors,
        retry_after=exc.retry_after,
        extra=exc.extra,
    )


def http_exception_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    """Litestar's own errors (unknown route, wrong method, bad parameter) as problems."""
    if isinstance(exc, ValidationException):
        return _validation_problem(request, exc)
    status = exc.status_code
    code = _CODE_BY_STATUS.get(status, "bad-request" if status < 500 else "internal")
    detail = str(exc.detail)
    if code == "payload-too-large":
        detail = f"the request body is larger than the limit{_body_limit(request)} (MAX_BODY_BYTES)"
    return problem_response(code, detail, instance=request.url.path, headers=exc.headers)


def _body_limit(request: Request[Any, Any, Any]) -> str:
    """ " of N bytes": the limit Litestar applied to this route's body, when it has one."""
    handler = request.scope.get("route_handler")
    if not isinstance(handler, HTTPRouteHandler):
        return ""
    limit = handler.resolve_request_max_body_size()
    return f" of {limit} bytes" if limit else ""


# Litestar reports a body that does not fit as one message about `data`, with the path
# msgspec named (" - at `$.data.sort`") left only in the exception's cause.
_BODY_PATH = re.compile(r" - at `\$\.data\.?([^`]*)`")
_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`")
_MISSING_FIELD = re.compile(r"missing required field `([^`]+)`")


def _validation_problem(
    request: Request[Any, Any, Any], exc: ValidationException
) -> Response[bytes]:
    """A body field that does not fit: 422 naming the field, as ingest answers a bad
    entry. A body that is not JSON, and a bad query or path parameter: 400 naming it."""
    errors: list[FieldError] = []
    body_fields = False
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if not isinstance(item, dict):
            continue
        key, message = str(item.get("key", "")), str(item.get("message", ""))
        if item.get("source") == "body" or key == "data":
            if key == "data" and message == "'data'":
                return problem_response(
                    "bad-request",
                    "the request body is empty; send a JSON object",
                    instance=request.url.path,
                )
            key = _body_field(message, str(exc.__cause__ or ""))
            message += _allowed_values(request, key)
            body_fields = True
        errors.append(FieldError(field=key or "$", reason=message))
    if not errors:
        return problem_response("bad-request", str(exc.detail), instance=request.url.path)
    named = ", ".join(e.field for e in errors)
    return problem_response(
        "validation-failed" if body_fields else "bad-request",
        f"invalid value for {named}: {errors[0].reason}",
        instance=request.url.path,
        errors=errors,
    )


def _body_field(message: str, cause: str) -> str:
    """The body field a message is about, as a dotted path ("$" for the whole body)."""
    at = _BODY_PATH.search(cause)
    path = at.group(1) if at else ""
    named = _UNKNOWN_FIELD.search(message) or _MISSING_FIELD.search(message)
    if named:
        path = f"{path}.{named.group(1)}" if path else named.group(1)
    return path or "$"


def _allowed_values(request: Request[Any, Any, Any], field: str) -> str:
    """ "; one of …" for a body field that takes a fixed set of values (interval, sort),
    read from the handler's body type: the message names what would have been valid."""
    data = request.route_handler.parsed_fn_signature.parameters.get("data")
    if data is None or "." in field:
        return ""
    with contextlib.suppress(TypeError, ValueError):
        info = msgspec.inspect.type_info(data.annotation)
        for f in getattr(info, "fields", ()):
            if f.encode_name == field and isinstance(f.type, msgspec.inspect.LiteralType):
                return "; one of " + ", ".join(map(str, f.type.values))
            if f.encode_name == field and isinstance(f.type, msgspec.inspect.UnionType):
                values = [
                    v
                    for t in f.type.types
                    if isinstance(t, msgspec.inspect.LiteralType)
                    for v in t.values
                ]
                if values:
                    return "; one of " + ", ".join(map(str, values))
    return ""


def recursion_error_handler(
    request: Request[Any, Any, Any], exc: RecursionError
) -> Response[bytes]:
    """msgspec refuses JSON nested deeper than the interpreter's recursion limit with a
    RecursionError (not a DecodeError), wherever a body is decoded: that is the
    client's malformed input, a 400. Any other RecursionError is a bug."""
    if "while deserializing" not in str(exc):
        return internal_error_handler(request, exc)
    return problem_response(
        "bad-request", "the JSON is nested too deeply", instance=request.url.path
    )


def database_unavailable_handler(
    request: Request[Any, Any, Any], exc: psycopg.OperationalError
) -> Response[bytes]:
    """PostgreSQL unreachable (restarting, pool exhausted) wherever a route met it: the
    client may retry, so 503 with Retry-After rather than an internal error."""
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    return problem_response(
        "unavailable",
        "the database is unavailable; retry shortly",
        instance=request.url.path,
        retry_after=2,
    )


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """A bug: log it with a correlation id the client can quote; say nothing else."""
    correlation_id = str(uuid.uuid4())
    log.exception("unhandled error %s on %s %s", correlation_id, request.method, request.url.path)
    return problem_response(
        "internal",
        f"An unexpected error occurred; quote correlation id {correlation_id}.",
        instance=request.url.path,
        extra={"correlation_id": correlation_id},
    )
