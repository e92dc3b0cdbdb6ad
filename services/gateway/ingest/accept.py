"""Accepting ingest: a decoded request in, the 202 answer out once the batch is queued.

Validation (ids, timestamps, limits) makes the records; the tenant's rate buckets are
charged; the records become ONE stream message (shared/streams.py). An Idempotency-Key
seen before answers the first request's body again without queueing anything. Only what
is queued stays charged: a 503 or a replay gives the tokens back, and a replay is
answered even when the tenant is at its rate limit.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
from redis.exceptions import RedisError

from services.gateway import metrics
from services.gateway.credentials import Credentials
from services.gateway.ingest.limits import IngestLimits, RateLimiter
from services.gateway.ingest.validation import (
    Limits,
    Validated,
    may_hold_nul,
    validate_decoded,
    validate_entries,
)
from shared.errors import (
    Backpressure,
    FieldError,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
    ValidationFailed,
)
from shared.model import IngestMessage, LogEntryIn, TracedIngestMessage
from shared.redis_keys import RedisKeys
from shared.settings import Settings
from shared.streams import BacklogFull, Enqueuer, encode_message
from shared.tracing import annotate, current_trace_context

log = logging.getLogger("gateway.ingest")

_encoder = msgspec.json.Encoder()


class IngestAnswer(msgspec.Struct):
    """The 202 body: ids of accepted entries (in request order) and per-entry errors."""

    accepted: int
    rejected: int
    ids: list[uuid.UUID]
    errors: list[FieldError]


class SingleAnswer(msgspec.Struct):
    id: uuid.UUID
    accepted: int = 1


@dataclass(frozen=True, slots=True)
class Accepted:
    """The 202 body, and whether it replays an earlier request's (Idempotency-Key)."""

    body: bytes
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Ingestor:
    """What accepting a request needs, from the gateway's state."""

    settings: Settings
    credentials: Credentials
    rate_limiter: RateLimiter
    enqueuer: Enqueuer

    async def limits_of(self, tenant_id: uuid.UUID) -> IngestLimits:
        return IngestLimits(tenant_id, await self.credentials.limits(tenant_id))

    async def one(
        self, tenant: IngestLimits, body: bytes, entry: LogEntryIn, idem_key: str | None
    ) -> Accepted:
        limits = Limits.from_settings(self.settings)
        result = validate_decoded(
            [entry], tenant.tenant_id, tenant.validation(limits), may_hold_nul=may_hold_nul(body)
        )
        result = tenant.drop_oversized(result, limits)
        if not result.records:
            _annotate(accepted=0, rejected=1)
            metrics.rejected("invalid", 1)
            error = result.errors[0]
            error.index = None
            raise ValidationFailed(
                f"invalid value for {error.field}: {error.reason}", errors=[error]
            )
        answer = _encoder.encode(SingleAnswer(id=result.records[0].id))
        return await self._enqueue(tenant, len(body), result, answer, idem_key)

    async def batch(
        self,
        tenant: IngestLimits,
        body: bytes,
        entries: list[LogEntryIn] | list[msgspec.Raw],
        idem_key: str | None,
        *,
        holds_nul: bool | None = None,
    ) -> Accepted:
        """`holds_nul`: whether a decoded entry may hold NUL characters; by default
        whether the JSON `body` has a `\\u0000` escape (a translated protocol, whose
        body is not JSON, says True unless it checked every text itself)."""
        try:
            tenant.check_batch(len(entries))
        except PayloadTooLarge:
            metrics.rejected("too_many_entries", len(entries))
            raise
        limits = tenant.validation(Limits.from_settings(self.settings))
        if isinstance(entries[0], LogEntryIn):
            decoded: list[LogEntryIn] = entries
            nul = may_hold_nul(body) if holds_nul is None else holds_nul
            result = validate_decoded(decoded, tenant.tenant_id, limits, may_hold_nul=nul)
        else:
            result = validate_entries(entries, tenant.tenant_id, limits)
        result = tenant.drop_oversized(result, Limits.from_settings(self.settings))
        if not result.records:
            _annotate(accepted=0, rejected=len(result.errors))
            metrics.rejected("invalid", len(result.errors))
            raise ValidationFailed("no entry in the batch is valid", errors=result.errors)
        answer = _encoder.encode(
            IngestAnswer(
                accepted=len(result.records),
                rejected=len(result.errors),
                ids=[r.id for r in result.records],
                errors=result.errors,
            )
        )
        return await self._enqueue(tenant, len(body), result, answer, idem_key)

    async def _enqueue(
        self,
        tenant: IngestLimits,
        size: int,
        result: Validated,
        answer: bytes,
        idem_key: str | None,
    ) -> Accepted:
        keys = RedisKeys.from_settings(self.settings)
        idem = keys.idempotency(str(tenant.tenant_id), idem_key) if idem_key else ""
        # Taken before the enqueue, so that concurrent requests (on any gateway) cannot
        # spend the same tokens; given back below for every request not accepted.
        try:
            charge = await self.rate_limiter.take(
                tenant.tenant_id, tenant.limits, len(result.records), size
            )
        except RateLimited:
            # A retry of an accepted request costs nothing: it gets its answer again.
            replayed = await self._previous_answer(idem)
            if replayed is None:
                _not_queued(result, "rate_limited")
                raise
            metrics.INGEST_REPLAYS.inc()
            return Accepted(replayed, replayed=True)
        except Unavailable:
            _not_queued(result, "unavailable")
            raise
        payload = encode_message(_message(tenant, result))
        retry_after = self.settings.backpressure_retry_after
        try:
            outcome = await self.enqueuer.enqueue(payload, idempotency_key=idem, answer=answer)
        except BacklogFull:
            _not_queued(result, "backlog_full")
            await self.rate_limiter.give_back(charge)
            raise Backpressure(
                "the ingest backlog is at its bound (STREAM_MAX_BACKLOG); retry later",
                retry_after=retry_after,
            ) from None
        except (RedisError, OSError) as exc:
            log.warning("enqueue failed: %s", exc)
            _not_queued(result, "unavailable")
            await self.rate_limiter.give_back(charge)
            raise Unavailable(
                "the ingest queue is unreachable; nothing was accepted, retry later",
                retry_after=retry_after,
            ) from None
        if outcome.replayed_answer is not None:
            await self.rate_limiter.give_back(charge)  # the first request paid
            annotate({"minisource.ingest.replayed": True})
            metrics.INGEST_REPLAYS.inc()
            return Accepted(outcome.replayed_answer, replayed=True)
        _annotate(accepted=len(result.records), rejected=len(result.errors))
        metrics.INGEST_ACCEPTED.inc(len(result.records))
        metrics.rejected("invalid", len(result.errors))
        return Accepted(answer)

    async def _previous_answer(self, idem: str) -> bytes | None:
        if not idem:
            return None
        try:
            return await self.enqueuer.previous_answer(idem)
        except (RedisError, OSError):
            return None  # the 429 stands


def _not_queued(result: Validated, reason: str) -> None:
    """Count a validated request refused as a whole: its valid entries for `reason`, the
    others as invalid (services/gateway/metrics.py)."""
    metrics.rejected(reason, len(result.records))
    metrics.rejected("invalid", len(result.errors))


def _message(tenant: IngestLimits, result: Validated) -> IngestMessage:
    """The stream message; it carries the request span's trace context when tracing is on
    (the writer links its spans to it)."""
    now = datetime.now(UTC)
    traceparent, tracestate = current_trace_context()
    if traceparent is None:
        return IngestMessage(tenant_id=tenant.tenant_id, received_at=now, records=result.records)
    return TracedIngestMessage(
        tenant_id=tenant.tenant_id,
        received_at=now,
        records=result.records,
        traceparent=traceparent,
        tracestate=tracestate,
    )


def _annotate(*, accepted: int, rejected: int) -> None:
    """The request span's ingest figures (README, "Tracing")."""
    annotate({"minisource.ingest.accepted": accepted, "minisource.ingest.rejected": rejected})
