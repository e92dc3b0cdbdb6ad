"""POST /loki/api/v1/push: Loki's push API, for Promtail, Grafana Alloy and any Loki client.

The body is a snappy-compressed protobuf `logproto.PushRequest` (Content-Type
application/x-protobuf, or none, as Loki assumes) or its JSON form (application/json),
either optionally gzip- or deflate-encoded. Its entries go through the same ingest as
/api/v1/logs/batch (Ingestor.batch: validation, tenant limits, Idempotency-Key,
backpressure, one stream message per push); the answer is Loki's: 204, or a plain-text
reason (answers.py).

The tenant is the caller's as everywhere (services/gateway/auth.py); Loki's tenant
header, X-Scope-OrgID, names it where X-Tenant-ID would (trusted_header mode, or an
admin key acting for a tenant).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    RequestBody,
    Schema,
)

from services.gateway.auth import OPENAPI_SECURITY, Caller, require_named_tenant
from services.gateway.content_type import MEDIA_TYPES_OPT
from services.gateway.ingest.accept import Ingestor
from services.gateway.ingest.compression import content_encoding, decompress, snappy_block
from services.gateway.ingest.limits import IngestLimits
from services.gateway.ingest.routes import INGEST_DEPENDENCIES, read_body
from services.gateway.ingest.translated import as_raw
from services.gateway.loki.answers import TEXT, pushed, refused
from services.gateway.loki.decoding import (
    JSON_MEDIA_TYPE,
    PROTOBUF_MEDIA_TYPE,
    JsonPushRequest,
    Push,
    decode_json,
    decode_protobuf,
)
from services.gateway.loki.labels import LabelMapping
from services.gateway.loki.translate import Translator
from services.gateway.openapi import OwnErrorShape, json_schema
from shared.errors import ValidationFailed
from shared.settings import Settings

# No Content-Type at all is protobuf, as in Loki.
MEDIA_TYPES = (PROTOBUF_MEDIA_TYPE, JSON_MEDIA_TYPE, "")


def label_mapping(settings: Settings) -> LabelMapping:
    return LabelMapping(service=tuple(settings.loki_service_labels.split(",")))


async def accept_push(
    ingestor: Ingestor,
    tenant: IngestLimits,
    *,
    media_type: str,
    encoding: str,
    body: bytes,
    idem_key: str | None,
) -> Response[bytes]:
    """Decode, translate and queue one push; Loki's answer."""
    limit = tenant.limits.max_body_bytes
    push: Push
    if media_type == JSON_MEDIA_TYPE:
        data = decompress(body, encoding, limit)
        push = decode_json(data)
    else:
        # Promtail's bodies are snappy blocks whatever Content-Encoding says ("snappy"
        # is sent by some clients and means just that); gzip/deflate wrap the block.
        data = snappy_block(
            decompress(body, "" if encoding == "snappy" else encoding, limit), limit
        )
        push = decode_protobuf(data)
    tenant.check_batch(push.total())
    translator = Translator(label_mapping(ingestor.settings), may_hold_nul=push.may_hold_nul)
    push.translate(translator)
    translated = translator.out
    if not translated.entries:
        return Response(b"", status_code=204)  # Loki takes an empty push
    entries = translated.entries if translated.fits else as_raw(translated.entries)
    try:
        # Fitting entries hold no NUL: the translator looked wherever the body could
        # carry one (`may_hold_nul`), so validation need not look again.
        accepted = await ingestor.batch(tenant, data, entries, idem_key, holds_nul=False)
    except ValidationFailed as exc:
        text = refused(exc.errors, translated, f"all {len(entries)} entries refused")
        return Response(text.encode(), status_code=400, media_type=TEXT)
    return pushed(accepted, translated)


def _text(description: str) -> OpenAPIResponse:
    return OpenAPIResponse(
        description=description,
        content={TEXT: OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))},
    )


@dataclasses.dataclass
class PushOperation(OwnErrorShape):
    """The push as documented: two body encodings, Loki's answers."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="A snappy-compressed logproto.PushRequest, or its JSON form; "
            "Content-Encoding gzip or deflate optional.",
            content={
                PROTOBUF_MEDIA_TYPE: OpenAPIMediaType(
                    schema=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
                ),
                JSON_MEDIA_TYPE: OpenAPIMediaType(schema=json_schema(JsonPushRequest)),
            },
        )
        self.responses = {
            "204": OpenAPIResponse(description="Every entry is queued; stored exactly once"),
            "400": _text(
                "The body does not decode, or entries were refused (the others "
                "are queued): the reasons, as text"
            ),
            "401": _text("No valid API key (trusted_header mode: no tenant header)"),
            "403": _text("The key lacks the ingest scope, or names another tenant"),
            "413": _text("The body or its entries are over the tenant's limits"),
            "415": _text("A Content-Type or Content-Encoding the push does not take"),
            "429": _text("The tenant's ingest rate is reached; see Retry-After"),
            "503": _text("The queue is full or unreachable; see Retry-After"),
            "default": _text("Any other error, as text"),
        }


@post(
    "/push",
    # Each answer sets its own status (204, or 400 naming refused entries); Litestar
    # allows no body type on a 204 route, and PushOperation documents the statuses.
    status_code=200,
    summary="Loki push (Promtail, Grafana Alloy)",
    description="Loki's push API: stream labels map to service_name, level, environment "
    'and host (README, "Loki push"); errors are plain text, as Loki\'s.',
    operation_class=PushOperation,
    opt={MEDIA_TYPES_OPT: MEDIA_TYPES},
    dependencies=INGEST_DEPENDENCIES,
    security=OPENAPI_SECURITY,
    tags=["ingest"],
)
async def push_logs(
    request: Request[Any, Any, Any],
    caller: NamedDependency[Caller],
    ingestor: NamedDependency[Ingestor],
) -> Response[bytes]:
    caller.require("ingest")
    require_named_tenant(request, caller)
    encoding = content_encoding(request.headers.get("content-encoding"))
    tenant, body, idem_key = await read_body(request, caller, ingestor)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return await accept_push(
        ingestor,
        tenant,
        media_type=media_type or PROTOBUF_MEDIA_TYPE,
        encoding=encoding,
        body=body,
        idem_key=idem_key,
    )
