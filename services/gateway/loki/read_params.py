"""Loki's request parameters: times (nanoseconds, seconds, RFC 3339), durations, the
window defaults, `limit` and `direction`, each refused in Loki's words when malformed."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from services.gateway.loki.logql import LogQLError, parse_duration
from services.gateway.query.params import MAX_PAGE_SIZE

# Loki's defaults: the last hour, 100 lines, newest first.
DEFAULT_SINCE = timedelta(hours=1)
DEFAULT_LIMIT = 100
# As a page of GET /api/v1/logs (Grafana's default line limit is 1000 too).
MAX_LIMIT = MAX_PAGE_SIZE
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INTEGER = re.compile(r"^-?\d{1,19}$")
_FLOAT = re.compile(r"^-?\d+\.\d*$|^-?\d*\.\d+$")
Direction = Literal["forward", "backward"]


def parse_time(text: str, name: str) -> datetime:
    """As Loki: an integer of up to 10 digits is Unix seconds, a longer one nanoseconds;
    a decimal is seconds; anything else RFC 3339."""
    value = text.strip()
    try:
        if _INTEGER.match(value):
            number = int(value)
            digits = len(value.lstrip("-"))
            moment = (
                _EPOCH + timedelta(seconds=number)
                if digits <= 10
                else _EPOCH + timedelta(microseconds=number // 1000)
            )
            return moment
        if _FLOAT.match(value):
            seconds = float(value)
            if not math.isfinite(seconds):
                raise ValueError
            return _EPOCH + timedelta(seconds=seconds)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except (ValueError, OverflowError):
        raise LogQLError(
            f'invalid parameter "{name}": cannot parse "{text[:64]}" to a valid timestamp'
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_step(text: str, name: str = "step") -> timedelta:
    """A duration (`15s`, `1000ms`) or a number of seconds (`15`, `0.5`)."""
    value = text.strip()
    try:
        if _INTEGER.match(value) or _FLOAT.match(value):
            seconds = float(value)
            if not math.isfinite(seconds) or seconds > 10 * 365 * 86400:
                raise ValueError
            step = timedelta(seconds=seconds)
        else:
            step = parse_duration(value)
    except (ValueError, OverflowError):
        raise LogQLError(
            f'invalid parameter "{name}": cannot parse "{text[:64]}" to a valid duration'
        ) from None
    if step <= timedelta(0):
        raise LogQLError(
            "zero or negative query resolution step widths are not accepted. Try a positive integer"
        )
    return step


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime


def window(
    start: str | None, end: str | None, since: str | None, now: datetime | None = None
) -> Window:
    """[start, end): end defaults to now, start to `since` (default 1 h) before end."""
    now = now or datetime.now(UTC)
    until = parse_time(end, "end") if end else now
    if start:
        begin = parse_time(start, "start")
    else:
        begin = until - (parse_step(since, "since") if since else DEFAULT_SINCE)
    if until < begin:
        raise LogQLError("end timestamp must not be before or equal to start time")
    return Window(begin, until)


def limit_of(text: str | None) -> int:
    if text is None or not text.strip():
        return DEFAULT_LIMIT
    try:
        limit = int(text.strip())
    except ValueError:
        raise LogQLError(f'invalid parameter "limit": cannot parse "{text[:32]}"') from None
    if limit <= 0:
        raise LogQLError("limit must be a positive value")
    if limit > MAX_LIMIT:
        raise LogQLError(
            f"max entries limit per query exceeded, limit > max_entries_limit ({limit} > "
            f"{MAX_LIMIT})"
        )
    return limit


def direction_of(text: str | None) -> Direction:
    value = (text or "backward").strip().lower()
    if value not in ("forward", "backward"):
        raise LogQLError(f'invalid parameter "direction": {text!r} is not forward or backward')
    return value  # type: ignore[return-value]


def default_step(w: Window) -> timedelta:
    """Loki's default resolution: about 250 points, at least one second."""
    return timedelta(seconds=max(math.floor((w.end - w.start).total_seconds() / 250), 1))


def nanos(moment: datetime) -> str:
    """A time as Loki writes it: nanoseconds since the epoch, as a string."""
    delta = moment - _EPOCH
    return str((delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000)


def seconds(moment: datetime) -> float:
    return (moment - _EPOCH).total_seconds()
