"""Loki stream labels: parsed from Prometheus' text form, and mapped onto our entry.

A stream's labels say where its lines come from (`{job="api", level="error"}`); the
mapping takes service_name, level, environment and host from the first label present
in each list below (the service list is LOKI_SERVICE_LABELS), labels named like one of
our id fields (trace_id, …) fill that field, and every other label becomes metadata.
Structured metadata (per entry) is mapped the same way and wins over the stream's
(services/gateway/loki/translate.py), except that it names no service.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.gateway.ingest.levels import level_name
from shared.errors import BadRequest

LEVEL_LABELS = ("level", "severity", "detected_level")
ENVIRONMENT_LABELS = ("environment", "env", "deployment_environment")
HOST_LABELS = ("host", "hostname")
# Labels or structured metadata that fill one of the entry's own fields, by name.
FIELD_LABELS = {
    "trace_id": "trace_id",
    "traceID": "trace_id",
    "traceId": "trace_id",
    "span_id": "span_id",
    "spanID": "span_id",
    "spanId": "span_id",
    "user_id": "user_id",
    "request_id": "request_id",
    "source": "source",
}
UNKNOWN_SERVICE = "unknown_service"  # what Loki itself calls a stream without a service
DEFAULT_LEVEL = "INFO"

_PAIR = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|\Z)', re.S)
_ESCAPE = re.compile(r"\\(?:x([0-9A-Fa-f]{2})|u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|(.))", re.S)
_SIMPLE_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
    "\\": "\\",
    '"': '"',
    "'": "'",
}


def parse_labels(text: str) -> dict[str, str]:
    """`{name="value", …}` (Go-quoted values, as Promtail and Alloy write them)."""
    stripped = text.strip()
    if len(stripped) < 2 or stripped[0] != "{" or stripped[-1] != "}":
        raise BadRequest(f'invalid stream labels {text[:200]!r}: expected {{name="value", …}}')
    inner, pos, labels = stripped[1:-1], 0, {}
    while pos < len(inner) and not inner[pos:].isspace():
        match = _PAIR.match(inner, pos)
        if match is None:
            raise BadRequest(f'invalid stream labels {text[:200]!r}: expected name="value" pairs')
        value = match.group(2)
        labels[match.group(1)] = _unescape(value, text) if "\\" in value else value
        pos = match.end()
    return labels


def _unescape(value: str, text: str) -> str:
    def one(match: re.Match[str]) -> str:
        hex_digits = match.group(1) or match.group(2) or match.group(3)
        if hex_digits:
            code = int(hex_digits, 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise BadRequest(f"invalid escape in stream labels {text[:200]!r}")
            return chr(code)
        simple = _SIMPLE_ESCAPES.get(match.group(4))
        if simple is None:
            raise BadRequest(f"invalid escape in stream labels {text[:200]!r}")
        return simple

    return _ESCAPE.sub(one, value)


@dataclass(frozen=True, slots=True)
class LabelMapping:
    """Which labels fill which field; the service list comes from LOKI_SERVICE_LABELS."""

    service: tuple[str, ...]
    level: tuple[str, ...] = LEVEL_LABELS
    environment: tuple[str, ...] = ENVIRONMENT_LABELS
    host: tuple[str, ...] = HOST_LABELS


@dataclass(slots=True)
class Mapped:
    """What labels (and structured metadata) say about an entry."""

    service_name: str | None = None
    level: str | None = None
    environment: str | None = None
    host: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)


def map_labels(labels: Mapping[str, str], mapping: LabelMapping) -> Mapped:
    """Split labels into the entry's fields and its metadata. A level we cannot name
    (`level="verbose2"`) leaves the level unset and stays in metadata as sent."""
    out = Mapped()
    used: set[str] = set()
    out.service_name = _first(labels, mapping.service, used)
    out.environment = _first(labels, mapping.environment, used)
    out.host = _first(labels, mapping.host, used)
    for name in mapping.level:
        value = labels.get(name)
        if value is not None and (level := level_name(value)) is not None:
            out.level = level
            used.add(name)
            break
    for name, value in labels.items():
        if name in used:
            continue
        target = FIELD_LABELS.get(name)
        if target is not None and value:
            out.fields[target] = value
        else:
            out.metadata[name] = value
    return out


def _first(labels: Mapping[str, str], names: tuple[str, ...], used: set[str]) -> str | None:
    for name in names:
        value = labels.get(name)
        if value:
            used.add(name)
            return value
    return None
