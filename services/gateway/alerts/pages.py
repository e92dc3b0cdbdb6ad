"""Paging of rules (oldest first) and events (newest first): by `limit` and `offset`, or
after an opaque cursor naming the last item seen, as fast at any depth (keyset on
`(created_at, id)`, the order of both listings' indexes)."""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from litestar.params import Parameter

from shared.errors import BadRequest, FieldError

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_OFFSET = 100_000

Limit = Annotated[int, Parameter(ge=1, le=MAX_LIMIT, description="Most items returned.")]
Offset = Annotated[
    int, Parameter(ge=0, le=MAX_OFFSET, description="Items skipped (not with `cursor`).")
]
CursorParam = Annotated[
    str | None,
    Parameter(max_length=256, description="`next_cursor` of the previous page."),
]
Listing = Literal["rules", "events"]
_VERSION = 1


class _Cursor(msgspec.Struct, array_like=True, frozen=True):
    version: int
    listing: Listing
    created_at: datetime
    id: uuid.UUID


@dataclass(frozen=True, slots=True)
class Keyset:
    """The sort key of the last item of a page: the next page starts strictly after it."""

    created_at: datetime
    id: uuid.UUID


@dataclass(frozen=True, slots=True)
class Page:
    """Which items: `limit` of them, after `after` or skipping `offset`."""

    limit: int = DEFAULT_LIMIT
    offset: int = 0
    after: Keyset | None = None


_encoder = msgspec.msgpack.Encoder(uuid_format="bytes")
_decoder = msgspec.msgpack.Decoder(_Cursor)


def encode_cursor(listing: Listing, last: Keyset) -> str:
    raw = _encoder.encode(_Cursor(_VERSION, listing, last.created_at, last.id))
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def page_of(listing: Listing, limit: int, offset: int, cursor: str | None) -> Page:
    """The page asked for; BadRequest naming the parameter at fault."""
    if cursor is None:
        return Page(limit, offset)
    if offset:
        raise _bad("offset", "send offset or cursor, not both")
    try:
        decoded = _decoder.decode(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise _bad("cursor", "not a cursor returned by this API") from None
    if decoded.version != _VERSION or decoded.listing != listing:
        raise _bad("cursor", f"not a cursor of this listing ({listing})")
    return Page(limit, 0, Keyset(decoded.created_at, decoded.id))


def _bad(field: str, reason: str) -> BadRequest:
    return BadRequest(f"invalid {field}: {reason}", errors=[FieldError(field, reason)])
