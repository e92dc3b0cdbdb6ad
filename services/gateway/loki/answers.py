"""Loki's answers: 204 with no body when every entry is stored, and errors as Loki
writes them, a plain-text reason (`http.Error`), not problem JSON.

The statuses are the gateway's own (one table: services/gateway/problems.py) with one
change: Loki has no 422, so a push whose entries are refused is a 400, the status on
which Promtail and Alloy drop a batch instead of retrying it. 429 and 503 keep their
Retry-After; agents retry those.

As in Loki, a push with some refused entries stores the others and answers 400 naming
the refused ones (the first few; the count says how many).
"""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.types import ExceptionHandlersMap

from services.gateway import problems
from services.gateway.ingest.accept import Accepted, IngestAnswer
from services.gateway.loki.translate import Translated
from shared.errors import FieldError, ServiceError

TEXT = "text/plain"
_answer = msgspec.json.Decoder(IngestAnswer)
_problem = msgspec.json.Decoder(dict[str, Any])
_NAMED = 10  # refused entries named in one answer


def pushed(accepted: Accepted, translated: Translated) -> Response[bytes]:
    """204, or 400 naming the refused entries (the accepted ones are queued)."""
    headers = {"Idempotent-Replayed": "true"} if accepted.replayed else None
    try:
        answer = _answer.decode(accepted.body)
    except msgspec.ValidationError:
        # A replay of a key first used on /api/v1/logs (one entry, accepted): its answer
        # has another shape, and says the entry was queued.
        return Response(b"", status_code=204, headers=headers)
    if not answer.rejected:
        return Response(b"", status_code=204, headers=headers)
    total = answer.accepted + answer.rejected
    text = refused(answer.errors, translated, f"{answer.rejected} of {total} entries refused")
    return Response(text.encode(), status_code=400, media_type=TEXT, headers=headers)


def refused(errors: list[FieldError], translated: Translated, heading: str) -> str:
    lines = [heading + (":" if errors else "")]
    for error in errors[:_NAMED]:
        where = translated.where(error.index) if error.index is not None else "the push"
        lines.append(f"{where}: {error.field}: {error.reason}")
    if len(errors) > _NAMED:
        lines.append(f"… and {len(errors) - _NAMED} more")
    return "\n".join(lines) + "\n"


def _as_text(problem: Response[bytes]) -> Response[bytes]:
    """The problem response the rest of the API would give, re-worded as Loki's."""
    body = _problem.decode(problem.content)
    lines = [str(body.get("detail", body.get("title", "error")))]
    lines += [f"{e.get('field')}: {e.get('reason')}" for e in body.get("errors", [])[:_NAMED]]
    status = 400 if problem.status_code == 422 else problem.status_code
    return Response(
        ("\n".join(lines) + "\n").encode(),
        status_code=status,
        media_type=TEXT,
        headers=problem.headers or None,
    )


def _service_error(request: Request[Any, Any, Any], exc: ServiceError) -> Response[bytes]:
    return _as_text(problems.service_error_handler(request, exc))


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    return _as_text(problems.http_exception_handler(request, exc))


def _recursion_error(request: Request[Any, Any, Any], exc: RecursionError) -> Response[bytes]:
    return _as_text(problems.recursion_error_handler(request, exc))


def _database_error(
    request: Request[Any, Any, Any], exc: psycopg.OperationalError
) -> Response[bytes]:
    return _as_text(problems.database_unavailable_handler(request, exc))


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    return _as_text(problems.internal_error_handler(request, exc))


# For the Loki router: every key the app maps (services/gateway/app.py), so that no
# error under /loki falls through to the app's problem JSON (Litestar picks the nearest
# layer's handler per exception class).
TEXT_ERROR_HANDLERS: ExceptionHandlersMap = {
    ServiceError: _service_error,
    HTTPException: _http_error,
    RecursionError: _recursion_error,
    psycopg.OperationalError: _database_error,
    Exception: _internal_error,
}
