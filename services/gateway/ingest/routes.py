"""POST /api/v1/logs and /api/v1/logs/batch: validate, assign ids, enqueue, answer 202.

202 means the batch is in a Redis stream and will be stored exactly once. When Redis
is unreachable or the backlog is at its bound the answer is 503 with Retry-After:
nothing is accepted that cannot be queued.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency, Provide
from litestar.openapi.datastructures import ResponseSpec

from services.gateway.auth import OPENAPI_SECURITY, Caller, provide_caller
from services.gateway.ingest.accept import (
    Accepted,
    IngestAnswer,
    Ingestor,
    SingleAnswer,
)
from services.gateway.ingest.compression import content_encoding, decompress
from services.gateway.ingest.decoding import (
    decode_batch_body,
    decode_single,
    idempotency_key,
)
from services.gateway.ingest.limits import IngestLimits
from services.gateway.metrics import INGEST_BYTES
from services.gateway.openapi import documented_body
from services.gateway.state import GatewayState
from shared.model import BatchIn, LogEntryIn

# Content-Encoding of the JSON API's bodies (snappy is Loki's, not ours).
_ENCODINGS = ("gzip", "x-gzip", "deflate")


def provide_ingestor(gateway: NamedDependency[GatewayState]) -> Ingestor:
    return Ingestor(gateway.settings, gateway.credentials, gateway.rate_limiter, gateway.enqueuer)


async def read_body(
    request: Request[Any, Any, Any], caller: Caller, ingestor: Ingestor
) -> tuple[IngestLimits, bytes, str | None]:
    """What every ingest route reads first, once the caller may ingest: the tenant's
    limits, the body as sent (counted, within the tenant's body limit) and the
    Idempotency-Key."""
    tenant = await ingestor.limits_of(caller.tenant_id)
    body = await request.body()
    INGEST_BYTES.inc(len(body))
    tenant.check_body(len(body))
    return tenant, body, idempotency_key(request.headers.get("idempotency-key"))


async def _read(
    request: Request[Any, Any, Any], caller: Caller, ingestor: Ingestor
) -> tuple[IngestLimits, bytes, str | None]:
    """The tenant's limits, the body (within them, decompressed) and the Idempotency-Key."""
    caller.require("ingest")
    tenant, body, idem_key = await read_body(request, caller, ingestor)
    # Clients gzip their batches (clients/python does); the tenant's body limit bounds the
    # decompressed body as it bounds a plain one.
    encoding = content_encoding(request.headers.get("content-encoding"), _ENCODINGS)
    return tenant, decompress(body, encoding, tenant.limits.max_body_bytes), idem_key


def answer_accepted(accepted: Accepted) -> Response[bytes]:
    """202 with the accepted request's body, marked when it replays an earlier one."""
    headers = {"Idempotent-Replayed": "true"} if accepted.replayed else None
    return Response(accepted.body, status_code=202, media_type="application/json", headers=headers)


# Every ingest route's: the caller, and what accepting a request needs (OTLP, Loki push
# and NDJSON use them too, so that all ways in share one path).
INGEST_DEPENDENCIES: dict[str, Provide] = {
    "caller": Provide(provide_caller),
    "ingestor": Provide(provide_ingestor, sync_to_thread=False),
}


class IngestController(Controller):
    path = "/api/v1/logs"
    tags = ["ingest"]
    dependencies = INGEST_DEPENDENCIES
    security = OPENAPI_SECURITY

    @post(
        "/",
        status_code=202,
        summary="Ingest one log entry",
        operation_class=documented_body(LogEntryIn, "One entry in the seed's shape"),
        responses={202: ResponseSpec(SingleAnswer, description="Queued; stored exactly once")},
    )
    async def ingest_one(
        self,
        request: Request[Any, Any, Any],
        caller: NamedDependency[Caller],
        ingestor: NamedDependency[Ingestor],
    ) -> Response[bytes]:
        tenant, body, idem_key = await _read(request, caller, ingestor)
        return answer_accepted(await ingestor.one(tenant, body, decode_single(body), idem_key))

    @post(
        "/batch",
        status_code=202,
        summary="Ingest a batch of log entries",
        description='`{"entries": [...]}` or a bare JSON array. Valid entries are accepted; '
        "each invalid one is reported in `errors` with its index, field and reason.",
        operation_class=documented_body(BatchIn[LogEntryIn], "A batch of entries"),
        responses={202: ResponseSpec(IngestAnswer, description="The valid entries are queued")},
    )
    async def ingest_batch(
        self,
        request: Request[Any, Any, Any],
        caller: NamedDependency[Caller],
        ingestor: NamedDependency[Ingestor],
    ) -> Response[bytes]:
        tenant, body, idem_key = await _read(request, caller, ingestor)
        entries = decode_batch_body(body, ingestor.settings.max_batch_entries)
        return answer_accepted(await ingestor.batch(tenant, body, entries, idem_key))
