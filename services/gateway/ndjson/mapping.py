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
from services.gateway.ingest.translated import from_micros

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
    `record` is consumed: its fields are moved, not copied. Runs once per line: written
    for speed (the first field name tried inline, the fields present found at once)."""
    pop = record.pop
    entry: dict[str, Any] = {}
    message = pop(names.message[0], None)
    if message is None and len(names.message) > 1:
        message = _take(record, names.message[1:])
    if message is not None:
        entry["message"] = message
    level = pop(names.level[0], None)
    if level is None and len(names.level) > 1:
        level = _take(record, names.level[1:])
    if level is None:
        entry["level"] = names.default_level
    else:
        entry["level"] = (level_name(level) or level) if level.__class__ is str else level
    service = pop(names.service[0], None)
    if service is None and len(names.service) > 1:
        service = _take(record, names.service[1:])
    entry["service_name"] = names.default_service if service is None else service
    stamp = pop(names.time[0], None)
    if stamp is None and len(names.time) > 1:
        stamp = _take(record, names.time[1:])
    if stamp is not None:
        entry["timestamp"] = _time(stamp)
    for name in _DIRECT.intersection(record):
        entry[name] = pop(name)
    nested = pop("metadata", None)
    if isinstance(nested, dict):
        record.update(nested)
    elif nested is not None:
        record["metadata"] = nested  # not an object: kept under its name
    if record:
        entry["metadata"] = record
    return entry


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
        return from_micros(round(value * 1_000_000))
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
