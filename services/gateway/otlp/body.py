"""An OTLP request's body as sent: its encoding (protobuf or JSON, from Content-Type)
and its content coding (gzip or deflate, from Content-Encoding), decompressed within
the tenant's body limit by the ingest family's bounded decompression
(services/gateway/ingest/compression.py): a small compressed body cannot grow past
max_body_bytes in memory."""

from __future__ import annotations

from typing import Literal

from services.gateway.ingest.compression import content_encoding, decompress

Encoding = Literal["protobuf", "json"]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MEDIA_TYPES = (PROTOBUF, JSON)
_ENCODINGS: dict[str, Encoding] = {PROTOBUF: "protobuf", JSON: "json"}
# What OpenTelemetry exporters and the Collector's otlphttp exporter compress with.
CONTENT_ENCODINGS = ("gzip", "x-gzip", "deflate")


def encoding_of(content_type: str | None) -> Encoding | None:
    """The OTLP encoding a Content-Type names; None for any other type."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    return _ENCODINGS.get(media_type)


def decoded_body(body: bytes, coding: str | None, limit: int) -> bytes:
    """The body without its content coding, at most `limit` bytes once decompressed
    (413 beyond, 400 when the compressed data is corrupt, 415 for another coding)."""
    return decompress(body, content_encoding(coding, CONTENT_ENCODINGS), limit)
