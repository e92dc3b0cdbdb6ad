"""OTLP log records → entries in the seed's shape (`LogEntryIn`), the mapping the
README's "OTLP" table documents.

The resource names the service, host and environment of its records; the severity
number (else its text) the level; a string body the message, a structured body the
message as JSON text plus its fields in metadata; the other attributes of the record,
then of its resource, go to metadata with dotted keys, bounded by the tenant's metadata
limits (what does not fit is dropped and counted in `otel.dropped_attributes_count`,
as OpenTelemetry SDKs do at their own limits). The ids become lower-case hex.

What the seed's model bounds (lengths) is checked here, since the entries are built in
Python rather than decoded; everything else (level names, time window, message size,
NUL, per-entry size) is the ingest pipeline's own validation, unchanged.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import msgspec

from services.gateway.ingest.validation import Limits
from shared.model import LogEntryIn

_json = msgspec.json.Encoder()

# Severity numbers 1-24 in OpenTelemetry's six ranges of four; TRACE folds into DEBUG.
_LEVEL_BY_NUMBER: tuple[str, ...] = (
    ("",) + ("DEBUG",) * 8 + ("INFO",) * 4 + ("WARN",) * 4 + ("ERROR",) * 4 + ("FATAL",) * 4
)
# Severity texts other loggers use that the seed's level names do not cover (the
# pipeline's own aliases, WARNING, ERR, CRITICAL and TRACE, are its validation's).
_TEXT_ALIASES = {
    "NOTICE": "INFO",
    "INFORMATION": "INFO",
    "INFORMATIONAL": "INFO",
    "EMERG": "FATAL",
    "EMERGENCY": "FATAL",
    "ALERT": "FATAL",
    "CRIT": "FATAL",
    "PANIC": "FATAL",
}

SERVICE_NAME = "service.name"
UNKNOWN_SERVICE = "unknown_service"  # what OpenTelemetry SDKs report when none is set
HOST_NAME = "host.name"
ENVIRONMENT = ("deployment.environment.name", "deployment.environment")
FILE_PATH = ("code.file.path", "code.filepath")  # current semantic conventions, older
LINE_NUMBER = ("code.line.number", "code.lineno")
USER_ID = ("user.id", "enduser.id")
REQUEST_ID = "request.id"
SCOPE_NAME = "otel.scope.name"
EVENT_NAME = "event.name"
DROPPED = "otel.dropped_attributes_count"
BODY_PREFIX = "body"

# The seed's model's bounds (shared/model.py), as msgspec words them when it decodes.
_MAX_LENGTH = {
    "service_name": 128,
    "user_id": 128,
    "request_id": 128,
    "source": 512,
    "host": 256,
    "environment": 64,
    "level": 16,
}


class RecordRejected(Exception):
    """One record cannot become an entry: its field and why, as validation says it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def _bounded(field: str, value: str) -> str:
    if len(value) > _MAX_LENGTH[field]:
        raise RecordRejected(field, f"Expected `str` of length <= {_MAX_LENGTH[field]}")
    return value


def _text_field(field: str, value: Any) -> str | None:
    """An attribute as the text of a model field (None when absent or empty)."""
    if value is None:
        return None
    text = value if value.__class__ is str else text_of(value)
    if len(text) > _MAX_LENGTH[field]:
        raise RecordRejected(field, f"Expected `str` of length <= {_MAX_LENGTH[field]}")
    return text or None


def text_of(value: Any) -> str:
    """An attribute value where the model wants text: strings as they are, anything
    else as its JSON text."""
    if isinstance(value, str):
        return value
    return _json.encode(value).decode()


def flatten(attributes: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Key-value lists as dotted keys: {"http": {"method": "GET"}} → {"http.method":
    "GET"}. Arrays stay arrays."""
    flat: dict[str, Any] = {}
    for key, value in attributes.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


class Origin(msgspec.Struct, frozen=True):
    """What a resource (and its scope) gives each of its records. Never changed once
    made: one may serve many requests (decoding.py caches them). A Struct: a frozen
    dataclass took 1.3 µs to build, a tenth of that here, and a Collector relaying
    many hosts sends nearly one resource per record."""

    service_name: str
    host: str | None
    environment: str | None
    attributes: dict[str, Any]  # read, never written
    size: int  # the attributes' JSON text, in bytes
    plain: bool  # no attribute is an array
    rejected: tuple[str, str] | None  # a resource field that does not fit, and why
    holds_nul: bool  # a text of it holds NUL (validation then looks in every entry's)


def origin_of(resource_attributes: dict[str, Any], scope_name: str) -> Origin:
    plain = _PLAIN.issuperset(map(type, resource_attributes.values()))
    attributes = dict(resource_attributes) if plain else flatten(resource_attributes)
    service = attributes.pop(SERVICE_NAME, None)
    host = attributes.pop(HOST_NAME, None)
    environment = attributes.pop(ENVIRONMENT[0], None)
    older = attributes.pop(ENVIRONMENT[1], None)
    if scope_name:
        attributes[SCOPE_NAME] = scope_name
    rejected = None
    service_name, host_name, environment_name = UNKNOWN_SERVICE, None, None
    try:
        service_name = _text_field("service_name", service) or UNKNOWN_SERVICE
        host_name = _text_field("host", host)
        environment_name = _text_field(
            "environment", environment if environment is not None else older
        )
    except RecordRejected as exc:
        rejected = (exc.field, exc.reason)
    encoded = _json.encode(attributes) if attributes else b""
    texts = f"{service_name}{host_name or ''}{environment_name or ''}"
    return Origin(
        service_name,
        host_name,
        environment_name,
        attributes,
        len(encoded),
        not attributes or _PLAIN.issuperset(map(type, attributes.values())),
        rejected,
        b"\\u0000" in encoded or "\x00" in texts,
    )


_LEVELS = len(_LEVEL_BY_NUMBER)


def level_of(number: int, text: str) -> str:
    """The level name: from the severity number when it is one of OpenTelemetry's
    (1-24), else from the text (the pipeline refuses a text it does not know), else
    INFO (the record says nothing)."""
    if 0 < number < len(_LEVEL_BY_NUMBER):
        return _LEVEL_BY_NUMBER[number]
    if text:
        return _TEXT_ALIASES.get(text.upper(), _bounded("level", text))
    return "INFO"


_BEFORE_ALL = datetime.min.replace(tzinfo=UTC)
_AFTER_ALL = datetime.max.replace(tzinfo=UTC)


def time_of(time_unix_nano: int, observed_unix_nano: int) -> datetime | None:
    """The record's time, else the time it was observed, else None (time of receipt)."""
    nanos = time_unix_nano or observed_unix_nano
    if not nanos:
        return None
    # Integer microseconds over a float: fromtimestamp rounds to the nearest
    # microsecond, which gives back exactly these (all below 2**53).
    try:
        return datetime.fromtimestamp(nanos // 1000 / 1e6, UTC)
    except (OverflowError, ValueError, OSError):
        # Beyond what datetime holds: outside every accepted window, so validation
        # refuses the record as too old or too far ahead, as it would any such time.
        return _AFTER_ALL if nanos > 0 else _BEFORE_ALL


def message_of(body: Any, attributes: dict[str, Any], event_name: str) -> str:
    """A string body is the message. A structured body is its JSON text, and its fields
    go to metadata under `body.`; no body is the event name, if any (else empty, which
    the pipeline refuses)."""
    if isinstance(body, str):
        return body
    if body is None:
        return event_name
    if isinstance(body, dict):
        for key, value in flatten(body, BODY_PREFIX).items():
            attributes.setdefault(key, value)
    elif isinstance(body, list):
        attributes.setdefault(BODY_PREFIX, body)
    elif isinstance(body, bytes):
        return base64.b64encode(body).decode()
    return _json.encode(body).decode()


def source_of(attributes: dict[str, Any]) -> str | None:
    """`path:line` from the code attributes (taken out of the metadata)."""
    path = attributes.pop(FILE_PATH[0], None)
    if path is None:
        path = attributes.pop(FILE_PATH[1], None)
    line = attributes.pop(LINE_NUMBER[0], None)
    if line is None:
        line = attributes.pop(LINE_NUMBER[1], None)
    if path is None:
        if line is not None:
            attributes[LINE_NUMBER[0]] = line  # a line of no file: kept as sent
        return None
    if line is None:
        source = text_of(path)
    elif path.__class__ is str and line.__class__ is int:
        source = f"{path}:{line}"
    else:
        source = f"{text_of(path)}:{text_of(line)}"
    return _bounded("source", source)


def metadata_of(
    record: dict[str, Any],
    origin: Origin,
    dropped: int,
    limits: Limits,
    size_hint: int,
) -> dict[str, Any] | None:
    """The record's attributes, then its resource's, within the metadata limits.

    `size_hint` bounds the record's attributes' size in protobuf bytes (-1: unknown).
    Their JSON text is at most six characters per byte (a control character is escaped
    as \\u00XX) plus quotes and separators, so when that bound fits, nothing is
    measured: the common case costs no encoding here."""
    plain = _PLAIN.issuperset(map(type, record.values()))
    if not plain and any(isinstance(v, dict) for v in record.values()):
        record = flatten(record)
    merged = {**origin.attributes, **record} if origin.attributes else record
    if dropped:
        merged[DROPPED] = dropped
    if not merged:
        return None
    count = len(merged)
    if count <= limits.max_metadata_keys:
        if (
            plain
            and origin.plain
            and not dropped
            and size_hint >= 0
            and 6 * size_hint + 8 * count + origin.size <= limits.max_metadata_bytes
        ):
            return merged
        if _fits(merged, limits):
            return merged
    return _trimmed(record, origin.attributes, dropped, limits)


# Values that nest nothing: within the depth limit whatever it is.
_PLAIN = frozenset({str, int, float, bool, bytes, type(None)})


def _fits(attributes: dict[str, Any], limits: Limits) -> bool:
    return len(_json.encode(attributes)) <= limits.max_metadata_bytes and all(
        _depth(v) < limits.max_metadata_depth for v in attributes.values()
    )


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


def _trimmed(
    record: dict[str, Any], resource: dict[str, Any], dropped: int, limits: Limits
) -> dict[str, Any]:
    """Keep the record's attributes first, then the resource's, while they fit; count
    the rest. One key is kept free for the count."""
    kept: dict[str, Any] = {}
    size = 2 + len(f',"{DROPPED}":{2**63}')  # braces, and room for the count
    for key, value in (*record.items(), *((k, v) for k, v in resource.items() if k not in record)):
        item = len(_json.encode({key: value})) - 1  # "key":value and its comma
        if (
            len(kept) + 1 < limits.max_metadata_keys
            and size + item <= limits.max_metadata_bytes
            and _depth(value) < limits.max_metadata_depth
        ):
            kept[key] = value
            size += item
        else:
            dropped += 1
    kept[DROPPED] = dropped
    return kept


def entry_of(
    origin: Origin,
    attributes: dict[str, Any],
    timestamp: datetime | None,
    severity_number: int,
    severity_text: str,
    body: Any,
    trace_id: str | None,
    span_id: str | None,
    event_name: str,
    dropped: int,
    limits: Limits,
    size_hint: int,
) -> LogEntryIn:
    """One record as an entry, or RecordRejected. `attributes` is the record's own,
    flattened or not, and is consumed."""
    if origin.rejected is not None:
        raise RecordRejected(*origin.rejected)
    message = body if body.__class__ is str else message_of(body, attributes, event_name)
    source = user_id = request_id = None
    if attributes:
        source = source_of(attributes)
        user = attributes.pop(USER_ID[0], None)
        if user is None:
            user = attributes.pop(USER_ID[1], None)
        user_id = _text_field("user_id", user)
        request_id = _text_field("request_id", attributes.pop(REQUEST_ID, None))
    if event_name and message is not event_name:
        attributes[EVENT_NAME] = event_name
    # Positional: the order of services/gateway/ingest/translated.py's ENTRY_FIELDS.
    return LogEntryIn(
        origin.service_name,
        _LEVEL_BY_NUMBER[severity_number]
        if 0 < severity_number < _LEVELS
        else level_of(severity_number, severity_text),
        message,
        None,
        None,
        timestamp,
        trace_id,
        span_id,
        user_id,
        request_id,
        metadata_of(attributes, origin, dropped, limits, size_hint),
        source,
        origin.host,
        origin.environment,
    )
