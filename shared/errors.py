"""Domain errors, each with a code and no transport: any service may raise them.

The gateway's one table (services/gateway/problems.py) turns each code into an HTTP
status and RFC 9457 problem JSON; the writer, janitor and evaluator raise and log the
same classes without knowing HTTP.
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
    """Base class: `code` names the problem type (and is its key in the gateway's table).

    `retry_after` (seconds) says when trying again may succeed; `extra` adds members to
    the problem (e.g. `limit`, `limit_value`)."""

    code = "internal"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        retry_after: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        self.retry_after = retry_after
        self.extra = extra or {}


class BadRequest(ServiceError):
    code = "bad-request"


class Unauthorized(ServiceError):
    code = "unauthorized"


class Forbidden(ServiceError):
    code = "forbidden"


class NotFound(ServiceError):
    code = "not-found"


class Conflict(ServiceError):
    code = "conflict"


class PayloadTooLarge(ServiceError):
    code = "payload-too-large"


class UnsupportedMediaType(ServiceError):
    code = "unsupported-media-type"


class ValidationFailed(ServiceError):
    code = "validation-failed"


class RateLimited(ServiceError):
    code = "rate-limited"


class Unavailable(ServiceError):
    code = "unavailable"


class Backpressure(Unavailable):
    code = "backpressure"
