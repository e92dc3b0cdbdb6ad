"""A record's fields onto our entry, by the names the query parameters give.

Agents name things their own way (Fluent Bit's `log` and `date`, Vector's `message`
and `timestamp`, Elastic's `@timestamp`): `_msg_field`, `_time_field`, `_level_field`
and `_service_field` each name the record's field (a comma-separated list: the first
present wins). The entry's other fields (trace_id, span_id, user_id, request_id,
source, host, environment, id, tenant_id) are taken by their own names; every other
field goes to metadata, beside (and under) a `metadata` object if the record has one.

A time may be RFC 3339 text, or a Unix time as a number or digits, in seconds,
milliseconds, microseconds or nanoseconds (told apart by magnitude, as VictoriaLogs
does). A level is any name levels.py knows; a record without one is `_default_level`
(INFO), without a service `_default_service` (unknown_service).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from services.gateway.ingest.levels import level_name
from services.gateway.ingest.translated import from_micros, seconds_as_time

# The entry's fields taken from a record by their own names.
DIRECT_FIELDS = (
    "trace_id",
    "span_id",
    "user_id",
    "request_id",
    "source",
    "host",
    "environment",
    "id",
    "tenant_id",
)
_DIRECT = frozenset(DIRECT_FIELDS)
# Below 10^11 a Unix time is seconds (until the year 5138), below 10^14 milliseconds,
# below 10^17 microseconds, beyond that nanoseconds.
_SCALES = ((10**11, 1_000_000), (10**14, 1_000), (10**17, 1))


@dataclass(frozen=True, slots=True)
class FieldNames:
    """Where a record keeps what our entry needs (the query parameters)."""

    message: tuple[str, ...] = ("message",)
    time: tuple[str, ...] = ("timestamp",)
    level: tuple[str, ...] = ("level",)
    service: tuple[str, ...] = ("service_name",)
    default_service: str = "unknown_service"
    default_level: str = "INFO"


def to_entry(record: dict[str, Any], names: FieldNames) -> dict[str, Any]:
    """The entry as a dict in the seed's shape (validated afterwards as any entry is).
    `record` is consumed and becomes the entry: its mapped fields are renamed in place,
    the entry's own fields stay where they are, and only the others move, into
    metadata. Runs once per line: written for speed (the first field name tried inline,
    the usual record, with no field of its own, settled by one set comparison)."""
    pop = record.pop
    message = pop(names.message[0], None)
    if message is None and len(names.message) > 1:
        message = _take(record, names.message[1:])
    level = pop(names.level[0], None)
    if level is None and len(names.level) > 1:
        level = _take(record, names.level[1:])
    service = pop(names.service[0], None)
    if service is None and len(names.service) > 1:
        service = _take(record, names.service[1:])
    stamp = pop(names.time[0], None)
    if stamp is None and len(names.time) > 1:
        stamp = _take(record, names.time[1:])
    # What is left beside the entry's own fields (a `message` that was not the message
    # field, `stream`, `kubernetes`, ...) is metadata, in the order sent, with the
    # record's `metadata` object merged over it.
    nested = pop("metadata", None)
    if record.keys() <= _DIRECT:
        metadata = None
    else:
        metadata = {key: record[key] for key in record if key not in _DIRECT}
        for key in metadata:
            del record[key]
    if isinstance(nested, dict):
        if metadata is None:
            metadata = nested
        else:
            metadata.update(nested)
    elif nested is not None:
        metadata = metadata or {}
        metadata["metadata"] = nested  # not an object: kept under its name
    if message is not None:
        record["message"] = message
    if level is None:
        record["level"] = names.default_level
    else:
        record["level"] = (level_name(level) or level) if level.__class__ is str else level
    record["service_name"] = names.default_service if service is None else service
    if stamp is not None:
        record["timestamp"] = _time(stamp)
    if metadata:
        record["metadata"] = metadata
    return record


def _take(record: dict[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        value = record.pop(name, None)
        if value is not None:
            return value
    return None


def _time(value: Any) -> Any:
    """A datetime for a Unix time; anything else as it is (RFC 3339 text is parsed, and
    anything else refused, by the entry's validation)."""
    if value.__class__ is float and -(10**11) < value < 10**11:  # seconds: the usual
        return seconds_as_time(value)
    digits = isinstance(value, str) and len(value) <= 40 and value.isascii()
    if digits and value.replace(".", "", 1).isdigit():
        value = float(value) if "." in value else int(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return value
    magnitude = abs(value)
    for bound, micros_per_unit in _SCALES:
        if magnitude < bound:
            return from_micros(round(value * micros_per_unit))
    return from_micros(int(value) // 1000)
