"""An OTLP logs request body (protobuf or JSON) → the entries it holds, and the records
that cannot be entries with their reasons.

A body that does not decode, or whose ids have the wrong length, is refused whole
(`UndecodableRequest`, 400), as the OpenTelemetry Collector refuses it: nothing of it
is taken. A record whose fields do not fit the model is refused alone.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any, TypeAlias

import msgspec

from services.gateway.ingest.validation import Limits
from services.gateway.otlp.json_model import SEVERITY_NUMBERS, JsonKeyValue, JsonLogsRequest
from services.gateway.otlp.mapping import Origin, RecordRejected, entry_of, origin_of, time_of
from services.gateway.otlp.values import UndecodableValue, from_json
from services.gateway.wire._protowire import otlp_attributes, otlp_logs
from shared.errors import FieldError
from shared.model import LogEntryIn

if TYPE_CHECKING:
    from services.gateway.wire._protowire import OtlpRecord

_json_request = msgspec.json.Decoder(JsonLogsRequest)
_TRACE_ID_BYTES, _SPAN_ID_BYTES = 16, 8

# A protobuf request as the C reader gives it: per ScopeLogs, the Resource's raw bytes,
# the scope's name and how many records it has; then every record (ids already hex and
# checked, times datetimes); and whether a string of the records or scopes holds NUL.
WireRequest: TypeAlias = "tuple[list[tuple[bytes, str, int]], list[OtlpRecord], bool]"


class UndecodableRequest(ValueError):
    """The body is not an OTLP logs request."""


@dataclass(slots=True)
class Translated:
    """The entries of a request, in order, and the records refused on the way (`index`:
    the record's position in the request, counted over every resource and scope)."""

    entries: list[LogEntryIn] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)  # each entry's record's index
    errors: list[FieldError] = field(default_factory=list)
    # Whether an entry's text may hold NUL (validation then looks in every field).
    holds_nul: bool = True

    @property
    def records(self) -> int:
        return len(self.entries) + len(self.errors)


def parse_protobuf(body: bytes) -> WireRequest:
    """A protobuf request, walked by the C reader (services/gateway/wire/): its records
    by (resource, scope)."""
    try:
        return otlp_logs(body)
    except ValueError as exc:
        reason, record = exc.args
        if record is None:
            message = f"the body is not an OTLP ExportLogsServiceRequest: {reason}"
        else:  # a value of that record (an AnyValue, an id) is invalid
            message = f"log record {record}: {reason}"
        raise UndecodableRequest(message) from None


def count_protobuf(request: WireRequest) -> int:
    return len(request[1])


def from_protobuf(request: WireRequest, limits: Limits) -> Translated:
    """The entries of a parsed protobuf request (parse_protobuf)."""
    groups, records, holds_nul = request
    out = Translated()
    index = 0
    every = iter(records)
    try:
        for resource, scope_name, count in groups:
            origin = _wire_origin(resource, scope_name)
            holds_nul = holds_nul or origin.holds_nul
            for (
                timestamp,
                severity_number,
                severity_text,
                body,
                attributes,
                trace_id,
                span_id,
                event_name,
                dropped,
                size,
            ) in islice(every, count):
                try:
                    entry = entry_of(
                        origin,
                        attributes,
                        timestamp,
                        severity_number,
                        severity_text,
                        body,
                        trace_id,
                        span_id,
                        event_name,
                        dropped,
                        limits,
                        size,
                    )
                except RecordRejected as exc:
                    out.errors.append(FieldError(exc.field, exc.reason, index))
                else:
                    out.entries.append(entry)
                    out.positions.append(index)
                index += 1
    except UndecodableValue as exc:
        raise UndecodableRequest(f"log record {index}: {exc}") from None
    except RecursionError:
        raise UndecodableRequest(f"log record {index}: a value is nested too deeply") from None
    out.holds_nul = holds_nul
    return out


# Origins are cached by the Resource's bytes: a process sends the same resource with
# every export, and a Collector the same few ones (an Origin is never changed and
# depends on nothing else). Only small resources are kept, so the cache stays within
# some tens of MB whatever is sent (typical resources are a few hundred bytes).
_CACHED_RESOURCE_BYTES = 2048


def _wire_origin(resource: bytes, scope_name: str) -> Origin:
    if len(resource) + len(scope_name) > _CACHED_RESOURCE_BYTES:
        return _origin_from_wire(resource, scope_name)
    return _cached_origin(resource, scope_name)


def _origin_from_wire(resource: bytes, scope_name: str) -> Origin:
    """The origin of a raw Resource and a scope."""
    try:
        attributes = otlp_attributes(resource)
    except ValueError as exc:
        raise UndecodableValue(f"the resource does not decode: {exc}") from None
    return origin_of(attributes, scope_name)


_cached_origin = functools.lru_cache(maxsize=4096)(_origin_from_wire)


def parse_json(body: bytes) -> JsonLogsRequest:
    try:
        return _json_request.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise UndecodableRequest(f"the body is not an OTLP logs request in JSON: {exc}") from None


def count_json(request: JsonLogsRequest) -> int:
    return sum(len(scope.log_records) for rl in request.resource_logs for scope in rl.scope_logs)


def from_json_request(request: JsonLogsRequest, limits: Limits) -> Translated:
    """The entries of a request in the OTLP JSON mapping."""
    out = Translated()
    index = 0
    try:
        for resource_logs in request.resource_logs:
            resource_attributes = (
                resource_logs.resource.attributes if resource_logs.resource else []
            )
            resource = _attributes(resource_attributes)
            for scope_logs in resource_logs.scope_logs:
                scope = scope_logs.scope.name if scope_logs.scope else ""
                origin = origin_of(resource, scope)
                for record in scope_logs.log_records:
                    try:
                        entry = entry_of(
                            origin,
                            _attributes(record.attributes),
                            timestamp=time_of(
                                int(record.time_unix_nano), int(record.observed_time_unix_nano)
                            ),
                            severity_number=_severity(record.severity_number),
                            severity_text=record.severity_text,
                            body=from_json(record.body),
                            trace_id=_json_id(record.trace_id, _TRACE_ID_BYTES, "traceId"),
                            span_id=_json_id(record.span_id, _SPAN_ID_BYTES, "spanId"),
                            event_name=record.event_name,
                            dropped=record.dropped_attributes_count,
                            limits=limits,
                            size_hint=-1,
                        )
                    except RecordRejected as exc:
                        out.errors.append(FieldError(exc.field, exc.reason, index))
                    else:
                        out.entries.append(entry)
                        out.positions.append(index)
                    index += 1
    except UndecodableValue as exc:
        raise UndecodableRequest(f"log record {index}: {exc}") from None
    except RecursionError:
        raise UndecodableRequest(f"log record {index}: a value is nested too deeply") from None
    return out


def _severity(number: int | str) -> int:
    if isinstance(number, int):
        return number
    if number not in SEVERITY_NUMBERS:
        raise UndecodableValue(f"severityNumber {number[:40]!r} is not a SeverityNumber")
    return SEVERITY_NUMBERS[number]


def _attributes(pairs: Iterable[JsonKeyValue]) -> dict[str, Any]:
    return {kv.key: from_json(kv.value) for kv in pairs}


_HEX = frozenset("0123456789abcdef")


def _json_id(text: str, size: int, name: str) -> str | None:
    """A hex id of the JSON mapping (not base64, as the protobuf JSON mapping would have
    bytes): twice `size` hex digits, any case."""
    if not text:
        return None
    lowered = text.lower()
    if len(text) != 2 * size or not _HEX.issuperset(lowered):
        raise UndecodableValue(f"{name} must be {2 * size} hex digits, not {text[:64]!r}")
    return lowered if lowered.strip("0") else None
