"""Building one log entry in the service's shape and encoding it to JSON once, when it is
logged: the queue then holds bytes, so its memory bound is exact and a mutable object
logged now cannot change before it is sent."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

# The entry's top-level fields besides service_name, level and message (the seed's
# LogEntry). Any other keyword given to `log()` goes into metadata.
ENTRY_FIELDS = frozenset(
    {
        "id",
        "tenant_id",
        "timestamp",
        "trace_id",
        "span_id",
        "user_id",
        "request_id",
        "metadata",
        "source",
        "host",
        "environment",
    }
)


def rfc3339(epoch_seconds: float) -> str:
    """UTC, microseconds, `Z`: the gateway requires a zone."""
    seconds = math.floor(epoch_seconds)
    micros = min(round((epoch_seconds - seconds) * 1_000_000), 999_999)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}Z"


def build_entry(
    service_name: str, level: str, message: str, fields: Mapping[str, Any]
) -> dict[str, Any]:
    """The entry as a dict: known fields at the top, every other one in metadata, the
    time of the call as timestamp unless one is given."""
    entry: dict[str, Any] = {"service_name": service_name, "level": level, "message": message}
    extra: dict[str, Any] = {}
    for key, value in fields.items():
        if value is None:
            continue
        if key in ENTRY_FIELDS:
            entry[key] = value
        else:
            extra[key] = value
    if extra:
        entry["metadata"] = {**entry.get("metadata", {}), **extra}
    timestamp = entry.get("timestamp")
    if timestamp is None:
        entry["timestamp"] = rfc3339(time.time())
    elif isinstance(timestamp, int | float):
        entry["timestamp"] = rfc3339(float(timestamp))
    return entry


def _fallback(value: Any) -> Any:
    """JSON for what json cannot encode by itself; anything else becomes its str()."""
    if isinstance(value, datetime):
        return value.isoformat() if value.tzinfo else value.isoformat() + "Z"
    if isinstance(value, date | uuid.UUID):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _finite(value: Any) -> Any:
    """NaN and infinities are not JSON: the gateway would refuse the whole batch."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def encode_entry(entry: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON; lone surrogates become U+FFFD rather than failing."""
    try:
        text = json.dumps(
            entry, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_fallback
        )
    except ValueError:
        try:
            text = json.dumps(
                _finite(entry), separators=(",", ":"), ensure_ascii=False, default=_fallback
            )
        except (ValueError, RecursionError):
            # A circular reference: keep the entry, with its metadata as readable text.
            safe = {**entry, "metadata": {"unencodable": repr(entry.get("metadata"))[:4096]}}
            text = json.dumps(safe, separators=(",", ":"), ensure_ascii=False, default=str)
    return text.encode("utf-8", "replace")


def encode_batch(entries: list[bytes]) -> bytes:
    """The batch body, joined from entries encoded one by one."""
    return b'{"entries":[' + b",".join(entries) + b"]}"
