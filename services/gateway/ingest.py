"""POST /api/v1/logs and /api/v1/logs/batch: validate, assign ids, enqueue, answer 202.

202 means the batch is in a Redis stream and will be stored exactly once. When Redis
is unreachable or the backlog is at its bound the answer is 503 with Retry-After:
nothing is accepted that cannot be queued.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency, Provide
from litestar.openapi.datastructures import ResponseSpec
from redis.exceptions import RedisError

from services.gateway.auth import OPENAPI_SECURITY, Caller, provide_caller
from services.gateway.limits import enforce_ingest_rate, ingest_limits
from services.gateway.openapi_body import documented_body
from services.gateway.validation import (
    Limits,
    Validated,
    decode_batch,
    decode_error,
    may_hold_nul,
    validate_decoded,
    validate_entries,
)
from shared.errors import (
    Backpressure,
    BadRequest,
    FieldError,
    PayloadTooLarge,
    Unavailable,
    UnsupportedMediaType,
    ValidationFailed,
)
from shared.model import BatchIn, IngestMessage, LogEntryIn
from shared.settings import Settings
from shared.streams import BacklogFull, Enqueuer, StreamKeys, encode_message

log = logging.getLogger("gateway.ingest")

_raw_list = msgspec.json.Decoder(list[msgspec.Raw])
_batch_object = msgspec.json.Decoder(BatchIn)


class _TypedBatch(msgspec.Struct):
    entries: list[LogEntryIn]


_typed_batch = msgspec.json.Decoder(_TypedBatch)
_single = msgspec.json.Decoder(LogEntryIn)
_encoder = msgspec.json.Encoder()


class IngestAnswer(msgspec.Struct):
    """The 202 body: ids of accepted entries (in request order) and per-entry errors."""

    accepted: int
    rejected: int
    ids: list[uuid.UUID]
    errors: list[FieldError]


class BatchDoc(msgspec.Struct):
    """The batch body as documented (the handler also takes a bare array)."""

    entries: list[LogEntryIn]


class SingleAnswer(msgspec.Struct):
    id: uuid.UUID
    accepted: int = 1


_JSON_TYPES = ("application/json", "text/json")


def _check_content_type(request: Request[Any, Any, Any]) -> None:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and content_type not in _JSON_TYPES and not content_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"send JSON (Content-Type: application/json), not {content_type!r}"
        )


def _idempotency_key(request: Request[Any, Any, Any], caller: Caller, keys: StreamKeys) -> str:
    key = request.headers.get("idempotency-key")
    if key is None:
        return ""
    key = key.strip()
    if not 1 <= len(key) <= 128 or not key.isascii() or not key.isprintable():
        raise BadRequest("Idempotency-Key must be 1 to 128 printable ASCII characters")
    return keys.idempotency(str(caller.tenant_id), key)


def _decode_batch_body(body: bytes, max_entries: int) -> list[LogEntryIn] | list[msgspec.Raw]:
    """Typed entries when the whole body is valid, raw entries (to validate one by one)
    when some entry is not, BadRequest when the body is not JSON of a batch shape."""
    stripped = body.lstrip()
    if not stripped:
        raise BadRequest('the request body is empty; send {"entries": [...]} or [...]')
    try:
        if stripped[:1] == b"[":
            typed = decode_batch(body)
            entries: list[LogEntryIn] | list[msgspec.Raw] = (
                typed if typed is not None else _raw_list.decode(body)
            )
        else:
            try:
                entries = _typed_batch.decode(body).entries
            except msgspec.ValidationError:
                entries = _batch_object.decode(body).entries
    except msgspec.ValidationError as exc:
        raise BadRequest(
            'a batch is {"entries": [...]} or a JSON array of entries',
            errors=[decode_error(exc)],
        ) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    if not entries:
        raise ValidationFailed(
            "the batch has no entries", errors=[FieldError("entries", "must not be empty")]
        )
    if len(entries) > max_entries:
        raise PayloadTooLarge(
            f"the batch has {len(entries)} entries; the limit is {max_entries} (MAX_BATCH_ENTRIES)"
        )
    return entries


class IngestController(Controller):
    path = "/api/v1/logs"
    tags = ["ingest"]
    dependencies = {"caller": Provide(provide_caller)}
    security = OPENAPI_SECURITY

    @post(
        "/",
        status_code=202,
        summary="Ingest one log entry",
        operation_class=documented_body(LogEntryIn, "One entry in the seed's shape"),
        responses={202: ResponseSpec(SingleAnswer, description="Queued; stored exactly once")},
    )
    async def ingest_one(
        self, request: Request[Any, Any, Any], caller: NamedDependency[Caller]
    ) -> Response[bytes]:
        caller.require("ingest")
        _check_content_type(request)
        tenant = await ingest_limits(request, caller)
        body = await request.body()
        tenant.check_body(len(body))
        try:
            entry = _single.decode(body)
        except msgspec.ValidationError as exc:
            raise ValidationFailed("the entry is not valid", errors=[decode_error(exc)]) from None
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f"malformed JSON: {exc}") from None
        settings: Settings = request.app.state.settings
        limits = Limits.from_settings(settings)
        result = validate_decoded(
            [entry], caller.tenant_id, tenant.validation(limits), may_hold_nul=may_hold_nul(body)
        )
        result = tenant.drop_oversized(result, limits)
        if not result.records:
            error = result.errors[0]
            error.index = None
            raise ValidationFailed("the entry is not valid", errors=[error])
        answer = _encoder.encode(SingleAnswer(id=result.records[0].id))
        await enforce_ingest_rate(request, tenant, len(result.records), len(body))
        return await _enqueue(request, caller, result, answer)

    @post(
        "/batch",
        status_code=202,
        summary="Ingest a batch of log entries",
        description='`{"entries": [...]}` or a bare JSON array. Valid entries are accepted; '
        "each invalid one is reported in `errors` with its index, field and reason.",
        operation_class=documented_body(BatchDoc, "A batch of entries"),
        responses={202: ResponseSpec(IngestAnswer, description="The valid entries are queued")},
    )
    async def ingest_batch(
        self, request: Request[Any, Any, Any], caller: NamedDependency[Caller]
    ) -> Response[bytes]:
        caller.require("ingest")
        _check_content_type(request)
        settings: Settings = request.app.state.settings
        tenant = await ingest_limits(request, caller)
        body = await request.body()
        tenant.check_body(len(body))
        entries = _decode_batch_body(body, settings.max_batch_entries)
        tenant.check_batch(len(entries))
        limits = Limits.from_settings(settings)
        if isinstance(entries[0], LogEntryIn):
            result = validate_decoded(
                entries,
                caller.tenant_id,
                tenant.validation(limits),
                may_hold_nul=may_hold_nul(body),
            )
        else:
            result = validate_entries(entries, caller.tenant_id, tenant.validation(limits))
        result = tenant.drop_oversized(result, limits)
        if not result.records:
            raise ValidationFailed("no entry in the batch is valid", errors=result.errors)
        answer = _encoder.encode(
            IngestAnswer(
                accepted=len(result.records),
                rejected=len(result.errors),
                ids=[r.id for r in result.records],
                errors=result.errors,
            )
        )
        await enforce_ingest_rate(request, tenant, len(result.records), len(body))
        return await _enqueue(request, caller, result, answer)


async def _enqueue(
    request: Request[Any, Any, Any], caller: Caller, result: Validated, answer: bytes
) -> Response[bytes]:
    state = request.app.state
    settings: Settings = state.settings
    idem_key = _idempotency_key(request, caller, StreamKeys.from_settings(settings))
    payload = encode_message(
        IngestMessage(
            tenant_id=caller.tenant_id, received_at=datetime.now(UTC), records=result.records
        )
    )
    enqueuer: Enqueuer = state.enqueuer
    try:
        outcome = await enqueuer.enqueue(payload, idempotency_key=idem_key, answer=answer)
    except BacklogFull:
        raise Backpressure(
            "the ingest backlog is at its bound (STREAM_MAX_BACKLOG); retry later",
            retry_after=settings.backpressure_retry_after,
        ) from None
    except (RedisError, OSError) as exc:
        log.warning("enqueue failed: %s", exc)
        raise Unavailable(
            "the ingest queue is unreachable; nothing was accepted, retry later",
            retry_after=settings.backpressure_retry_after,
        ) from None
    if outcome.replayed_answer is not None:
        return Response(
            outcome.replayed_answer,
            status_code=202,
            media_type="application/json",
            headers={"Idempotent-Replayed": "true"},
        )
    return Response(answer, status_code=202, media_type="application/json")
