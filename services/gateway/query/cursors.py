"""Opaque keyset cursors: where the previous page ended, and for which query.

A cursor carries the sort key of the last entry returned (timestamp, id), so the next
page starts right after it through the index however deep it is. It also carries the
instant the first page was asked (`now`): relative times (`now-1h`) and the default
window resolve against it, so every page of one walk reads the same window. A
fingerprint of tenant, sort and filter refuses a cursor sent with another query.
The total found on the first page travels along, so later pages do not count again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime

import msgspec

from services.gateway.query.store import Sort
from shared.errors import BadRequest, FieldError
from shared.filters import CompiledFilter

_VERSION = 1


class Cursor(msgspec.Struct, array_like=True, frozen=True):
    """What a `next_cursor` encodes (msgpack, then base64url without padding)."""

    version: int
    sort: Sort
    timestamp: datetime
    id: uuid.UUID
    now: datetime
    page: int
    total: int
    total_is_estimate: bool
    fingerprint: bytes


@dataclass(frozen=True, slots=True)
class Keyset:
    """The sort key of the last entry seen: the next page starts strictly after it."""

    timestamp: datetime
    id: uuid.UUID


_decoder = msgspec.msgpack.Decoder(Cursor)
_encoder = msgspec.msgpack.Encoder(uuid_format="bytes")


def fingerprint(tenant_id: uuid.UUID, sort: Sort, f: CompiledFilter) -> bytes:
    """Eight bytes naming the query a cursor belongs to."""
    digest = hashlib.sha256(tenant_id.bytes + sort.encode() + b"\0" + f.canonical())
    return digest.digest()[:8]


def encode_cursor(cursor: Cursor) -> str:
    return base64.urlsafe_b64encode(_encoder.encode(cursor)).rstrip(b"=").decode()


def decode_cursor(text: str) -> Cursor:
    """The cursor in `text`; BadRequest when it was not made by `encode_cursor`."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        cursor = _decoder.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise _bad_cursor("not a cursor returned by this API") from None
    if cursor.version != _VERSION or cursor.page < 1:
        raise _bad_cursor("not a cursor returned by this version of the API")
    return cursor


def check_cursor(cursor: Cursor, tenant_id: uuid.UUID, sort: Sort, f: CompiledFilter) -> None:
    """Refuse a cursor sent with a filter, sort or tenant other than its own."""
    if cursor.sort != sort or cursor.fingerprint != fingerprint(tenant_id, sort, f):
        raise _bad_cursor(
            "this cursor belongs to another query: send the same filters and sort as the "
            "request that returned it, or drop the cursor to start again"
        )


def make_cursor(
    *,
    sort: Sort,
    last: Keyset,
    now: datetime,
    page: int,
    total: int,
    total_is_estimate: bool,
    tenant_id: uuid.UUID,
    f: CompiledFilter,
) -> str:
    return encode_cursor(
        Cursor(
            version=_VERSION,
            sort=sort,
            timestamp=last.timestamp,
            id=last.id,
            now=now,
            page=page,
            total=total,
            total_is_estimate=total_is_estimate,
            fingerprint=fingerprint(tenant_id, sort, f),
        )
    )


def _bad_cursor(reason: str) -> BadRequest:
    return BadRequest(f"invalid cursor: {reason}", errors=[FieldError("cursor", reason)])
