"""Request bodies sent compressed (Content-Encoding gzip, deflate, snappy), decompressed
within a bound: a small body that would expand past the limit (a zip bomb) is refused
with 413 after at most `limit` + 1 bytes were produced, never expanded in full.

The limit is the tenant's `max_body_bytes`: it bounds the decompressed body exactly as
it bounds a plain one, so compression changes the bytes on the wire and nothing else.
"""

from __future__ import annotations

import zlib

import cramjam

from shared.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

# Content-Encoding values as agents send them; "identity" and none mean as is.
ENCODINGS = ("gzip", "x-gzip", "deflate", "snappy")
# zlib's wbits for a gzip stream (16 + the largest window).
_GZIP_WBITS = 31


def content_encoding(header: str | None, allowed: tuple[str, ...] = ENCODINGS) -> str:
    """The body's encoding, lower case ("" for none), or 415 naming what is supported."""
    encoding = (header or "").strip().lower()
    if encoding in ("", "identity"):
        return ""
    if encoding not in allowed:
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported; send one of "
            f"{', '.join(allowed)}, or none"
        )
    return encoding


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """`body` decoded from `encoding` ("" for none), at most `limit` bytes."""
    if not encoding:
        return body
    if encoding in ("gzip", "x-gzip"):
        return _inflate(body, _GZIP_WBITS, limit, "gzip")
    if encoding == "deflate":
        return _inflate(body, _deflate_wbits(body), limit, "deflate")
    if encoding == "snappy":
        return snappy_block(body, limit)
    raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported")


def snappy_block(body: bytes, limit: int) -> bytes:
    """A snappy block (the "raw" format Promtail and Alloy send, no framing): its header
    declares the decoded length, checked before anything is allocated."""
    try:
        declared = cramjam.snappy.decompress_raw_len(body)
    except cramjam.DecompressionError:
        raise BadRequest("the body is not valid snappy-compressed data") from None
    if declared > limit:
        raise _too_large(limit)
    try:
        return bytes(cramjam.snappy.decompress_raw(body))
    except cramjam.DecompressionError:
        raise BadRequest("the body is not valid snappy-compressed data") from None


def _deflate_wbits(body: bytes) -> int:
    """HTTP's "deflate" is zlib-wrapped (RFC 9110), but Go's and some agents' is raw
    DEFLATE: a valid zlib header (CMF/FLG check) tells them apart."""
    if len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0:
        return zlib.MAX_WBITS
    return -zlib.MAX_WBITS


def _inflate(body: bytes, wbits: int, limit: int, name: str) -> bytes:
    out = bytearray()
    data = body
    try:
        # A gzip body may hold several members one after the other (RFC 1952): each is
        # inflated in turn, all within the one bound.
        while True:
            inflater = zlib.decompressobj(wbits)
            out += inflater.decompress(data, limit + 1 - len(out))
            if len(out) > limit:
                raise _too_large(limit)
            if not inflater.eof:
                if inflater.unconsumed_tail:  # stopped by the bound, with input left
                    raise _too_large(limit)
                raise BadRequest(f"the {name} body is truncated")
            data = inflater.unused_data
            if not data or wbits != _GZIP_WBITS:
                return bytes(out)
    except zlib.error as exc:
        raise BadRequest(f"the body is not valid {name} data: {exc}") from None


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the decompressed body is larger than the limit of {limit} bytes (max_body_bytes)",
        extra={"limit": "max_body_bytes", "limit_value": limit},
    )
