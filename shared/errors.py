"""Domain errors with a code each, and the one table that maps them to HTTP.

Handlers raise these; the gateway turns them into RFC 9457 problem JSON. A service
that is not HTTP (writer, janitor) uses the same classes for its own logs.
"""

from __future__ import annotations

from typing import Any

import msgspec


class FieldError(msgspec.Struct, omit_defaults=True):
    """Why one field (of one entry, when `index` is set) was refused."""

    field: str
    reason: str
    index: int | None = None


class ServiceError(Exception):
    """Base class: `code` names the problem type, `status` is its HTTP status."""

    code = "internal"
    status = 500
    title = "Internal error"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        retry_after: int | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        self.retry_after = retry_after
        self.extra = extra or {}
        self.headers = headers or {}


class BadRequest(ServiceError):
    code, status, title = "bad-request", 400, "Bad request"


class Unauthorized(ServiceError):
    code, status, title = "unauthorized", 401, "Authentication required"


class Forbidden(ServiceError):
    code, status, title = "forbidden", 403, "Forbidden"


class NotFound(ServiceError):
    code, status, title = "not-found", 404, "Not found"


class Conflict(ServiceError):
    code, status, title = "conflict", 409, "Conflict"


class PayloadTooLarge(ServiceError):
    code, status, title = "payload-too-large", 413, "Payload too large"


class UnsupportedMediaType(ServiceError):
    code, status, title = "unsupported-media-type", 415, "Unsupported media type"


class ValidationFailed(ServiceError):
    code, status, title = "validation-failed", 422, "Validation failed"


class RateLimited(ServiceError):
    code, status, title = "rate-limited", 429, "Too many requests"


class Unavailable(ServiceError):
    code, status, title = "unavailable", 503, "Service unavailable"


class Backpressure(Unavailable):
    code, title = "backpressure", "Ingest backlog is full"
