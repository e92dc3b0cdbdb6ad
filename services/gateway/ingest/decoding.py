"""Reading an ingest request: its media type, its Idempotency-Key and its JSON body
(one entry, or a batch as `{"entries": [...]}` or a bare array)."""

from __future__ import annotations

import msgspec

from services.gateway.ingest.validation import decode_batch, decode_error
from shared.errors import BadRequest, FieldError, PayloadTooLarge, ValidationFailed
from shared.model import BatchIn, LogEntryIn

_raw_list = msgspec.json.Decoder(list[msgspec.Raw])
_batch_object = msgspec.json.Decoder(BatchIn[msgspec.Raw])
_typed_batch = msgspec.json.Decoder(BatchIn[LogEntryIn])
_single = msgspec.json.Decoder(LogEntryIn)

_EMPTY_BODY = 'the request body is empty; send {"entries": [...]} or [...]'


def idempotency_key(header: str | None) -> str | None:
    """The Idempotency-Key as sent, checked; None when there is none."""
    if header is None:
        return None
    key = header.strip()
    if not 1 <= len(key) <= 128 or not key.isascii() or not key.isprintable():
        raise BadRequest("Idempotency-Key must be 1 to 128 printable ASCII characters")
    return key


def decode_single(body: bytes) -> LogEntryIn:
    if not body.strip():
        raise BadRequest("the request body is empty; send one entry as a JSON object")
    try:
        return _single.decode(body)
    except msgspec.ValidationError as exc:
        error = decode_error(exc)
        # Worded as every route words a body field that does not fit (problems.py).
        raise ValidationFailed(
            f"invalid value for {error.field}: {error.reason}", errors=[error]
        ) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None


def decode_batch_body(body: bytes, max_entries: int) -> list[LogEntryIn] | list[msgspec.Raw]:
    """Typed entries when the whole body is valid, raw entries (to validate one by one)
    when some entry is not, BadRequest when the body is not JSON of a batch shape."""
    stripped = body.lstrip()
    if not stripped:
        raise BadRequest(_EMPTY_BODY)
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
