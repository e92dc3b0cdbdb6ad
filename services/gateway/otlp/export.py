"""Accepting one OTLP export: decode, translate, then the ingest pipeline every route
shares (`Ingestor.batch`: validation, tenant limits, Idempotency-Key, backpressure,
one stream message per request), and its answer in OTLP's terms.

Records refused by the mapping (a field over the model's bounds) or by validation are
counted together in `partial_success`; the others are queued. A request none of whose
records can be taken is 400 (OTLP: "the request data is invalid"), so exporters drop it
rather than retry it; an empty request is a success, as the specification says.
"""

from __future__ import annotations

import msgspec
from litestar import Response

from services.gateway.ingest.accept import Ingestor
from services.gateway.ingest.limits import IngestLimits
from services.gateway.ingest.validation import Limits
from services.gateway.otlp.body import Encoding
from services.gateway.otlp.decoding import (
    Translated,
    UndecodableRequest,
    count_json,
    count_protobuf,
    from_json_request,
    from_protobuf,
    parse_json,
    parse_protobuf,
)
from services.gateway.otlp.responses import exported
from shared.errors import BadRequest, FieldError, ValidationFailed


class _Counts(msgspec.Struct):
    """What the OTLP answer needs of the ingest answer (its ids are not sent)."""

    accepted: int
    rejected: int
    errors: list[FieldError]


_counts = msgspec.json.Decoder(_Counts)
_NAMED = 10  # refused records named in one message


def translate(encoding: Encoding, data: bytes, tenant: IngestLimits, limits: Limits) -> Translated:
    """The request's entries; 400 when it does not decode, 413 over max_batch_entries
    (counted before any record is translated)."""
    try:
        if encoding == "protobuf":
            request = parse_protobuf(data)
            tenant.check_batch(count_protobuf(request))
            return from_protobuf(request, limits)
        json_request = parse_json(data)
        tenant.check_batch(count_json(json_request))
        return from_json_request(json_request, limits)
    except UndecodableRequest as exc:
        raise BadRequest(str(exc)) from None


async def accept_export(
    ingestor: Ingestor,
    tenant: IngestLimits,
    encoding: Encoding,
    data: bytes,
    idem_key: str | None,
) -> Response[bytes]:
    limits = tenant.validation(Limits.from_settings(ingestor.settings))
    translated = translate(encoding, data, tenant, limits)
    if not translated.entries:
        if translated.errors:
            raise ValidationFailed(_summary(translated.errors, translated.records))
        return exported(encoding)
    try:
        accepted = await ingestor.batch(
            tenant,
            data,
            translated.entries,
            idem_key,
            # A protobuf string may hold NUL: the C reader notes whether one does, and
            # validation then looks. JSON: only through a \u0000 escape, which
            # validation finds in the body by itself.
            holds_nul=translated.holds_nul if encoding == "protobuf" else None,
        )
    except ValidationFailed as exc:
        errors = _in_request(exc.errors, translated)
        raise ValidationFailed(_summary(errors, translated.records)) from None
    counts = _counts.decode(accepted.body)
    errors = _in_request(counts.errors, translated)
    response = exported(encoding, len(errors), _summary(errors, translated.records))
    if accepted.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _in_request(validation: list[FieldError], translated: Translated) -> list[FieldError]:
    """Every refused record, numbered by its place in the request."""
    errors = list(translated.errors)
    for error in validation:
        if error.index is not None:
            error.index = translated.positions[error.index]
        errors.append(error)
    errors.sort(key=lambda e: e.index or 0)
    return errors


def _summary(errors: list[FieldError], records: int) -> str:
    if not errors:
        return ""
    named = "; ".join(
        f"log record {e.index}: {e.field}: {e.reason}" if e.index is not None else e.reason
        for e in errors[:_NAMED]
    )
    more = f"; and {len(errors) - _NAMED} more" if len(errors) > _NAMED else ""
    return f"{len(errors)} of {records} log records refused: {named}{more}"
