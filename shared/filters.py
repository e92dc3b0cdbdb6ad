"""The one filter model: what a caller asks for, compiled to SQL and to a Python predicate.

Queries, stats, aggregations and alert rules compile a `LogFilter` with `where_sql`;
the live tail tests committed entries with `matches`, its Python twin. The two must
agree on every entry (tests/test_filters.py checks them against each other).

The tenant is never part of the filter: it comes from the caller and is passed
explicitly, so a filter cannot name another tenant.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

import msgspec
from psycopg import sql

from shared.errors import FieldError, ValidationFailed
from shared.model import Level

MetadataValue = str | int | float | bool
ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
SearchText = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]

_RELATIVE = re.compile(r"^now(?:\s*-\s*(\d+)\s*(s|m|h|d|w))?$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_SEARCH_TERMS = re.compile(r'"([^"]*)"|(\S+)')
MAX_METADATA_FILTERS = 16
MAX_LIST_VALUES = 50


class LogFilter(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """The seed's query shape (minus tenant, page and page_size) plus our extras.

    Every field narrows the result (AND). `level` is one exact level, `min_level` that
    level or more severe; `services`/`levels` are lists (OR within the list).
    """

    service_name: ShortText | None = None
    services: list[ShortText] | None = None
    level: str | None = None
    levels: list[str] | None = None
    min_level: str | None = None
    # RFC 3339 with a zone, or relative (`now-1h`); text, as it came on the wire.
    start_time: str | None = None
    end_time: str | None = None
    trace_id: ShortText | None = None
    span_id: ShortText | None = None
    user_id: ShortText | None = None
    request_id: ShortText | None = None
    search: SearchText | None = None
    environment: ShortText | None = None
    host: ShortText | None = None
    source: ShortText | None = None
    metadata: dict[str, MetadataValue] | None = None


@dataclass(frozen=True, slots=True)
class CompiledFilter:
    """A validated filter with its time window resolved to instants (UTC)."""

    services: tuple[str, ...] = ()
    levels: tuple[int, ...] = ()
    min_level: int | None = None
    start: datetime | None = None
    end: datetime | None = None
    trace_id: str | None = None
    span_id: str | None = None
    user_id: str | None = None
    request_id: str | None = None
    search_terms: tuple[str, ...] = ()
    environment: str | None = None
    host: str | None = None
    source: str | None = None
    metadata: tuple[tuple[str, MetadataValue], ...] = ()
    # Substrings the message must NOT contain (ASCII case ignored, as search_terms): no
    # REST parameter sets them; LogQL's `!= "text"` line filter does (gateway/loki).
    exclude_terms: tuple[str, ...] = ()

    @property
    def uses_only_rollup_dimensions(self) -> bool:
        """True when log_counts (tenant, minute, service, level, environment) can answer:
        no search, ids, host, source or metadata terms. Time is then minute-aligned."""
        return not (
            self.search_terms
            or self.exclude_terms
            or self.trace_id
            or self.span_id
            or self.user_id
            or self.request_id
            or self.host
            or self.source
            or self.metadata
        )

    @property
    def is_empty_range(self) -> bool:
        return self.start is not None and self.end is not None and self.start >= self.end

    def with_default_window(self, width: timedelta, now: datetime) -> CompiledFilter:
        """The same filter with a start when it has none: `width` before its end (or
        before `now` when it is open-ended too). The end stays open when not given, so
        entries dated slightly ahead of the server's clock are still found."""
        if self.start is not None:
            return self
        return replace(self, start=(self.end or now) - width)

    def canonical(self) -> bytes:
        """A stable encoding of the whole filter (times resolved), for cache keys and
        cursor fingerprints: equal filters give equal bytes."""
        return _canonical.encode(self)


_canonical = msgspec.json.Encoder(order="deterministic")


def parse_time(value: str | datetime, field: str, now: datetime) -> datetime:
    """RFC 3339 with a zone, or relative: `now`, `now-15m`, `now-1h`, `now-7d`."""
    if isinstance(value, datetime):
        parsed = value
    else:
        text = value.strip()
        relative = _RELATIVE.match(text)
        if relative:
            amount, unit = relative.groups()
            if amount is None:
                return now
            try:
                return now - timedelta(**{_UNITS[unit]: int(amount)})
            except OverflowError:
                raise ValidationFailed(
                    f"{field} is too far back", errors=[FieldError(field, "out of range")]
                ) from None
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValidationFailed(
                f"{field} is not a time",
                errors=[FieldError(field, "expected RFC 3339 (2024-01-15T10:30:00Z) or now-1h")],
            ) from None
    if parsed.tzinfo is None:
        raise ValidationFailed(
            f"{field} has no time zone",
            errors=[FieldError(field, "must include a time zone (Z or +hh:mm)")],
        )
    return parsed.astimezone(UTC)


def parse_search(text: str) -> tuple[str, ...]:
    """Words and "quoted phrases"; each must appear in the message as a substring,
    ignoring the case of ASCII letters (`fold_case`)."""
    terms = []
    for phrase, word in _SEARCH_TERMS.findall(text):
        term = (phrase or word).strip()
        if term:
            terms.append(term)
    return tuple(dict.fromkeys(terms))


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold_case(text: str) -> str:
    """Lower-case ASCII letters only: what `ILIKE` does under the "C" collation.

    Pinned to ASCII so the SQL and `matches` agree whatever the database's locale
    (glibc and Python fold some non-ASCII letters differently, e.g. U+0130)."""
    return text.translate(_ASCII_LOWER)


def _level(value: str, field: str) -> int:
    try:
        return int(Level.parse(value))
    except ValueError as exc:
        raise ValidationFailed(
            f"{field} is not a level", errors=[FieldError(field, str(exc))]
        ) from None


_TEXT_FIELDS = ("trace_id", "span_id", "user_id", "request_id", "environment", "host", "source",
                "search")  # fmt: skip


def compile_filter(f: LogFilter, now: datetime | None = None) -> CompiledFilter:
    """Validate and normalise; raises ValidationFailed naming the field at fault."""
    now = now or datetime.now(UTC)
    services = ([f.service_name] if f.service_name else []) + list(f.services or [])
    levels = ([f.level] if f.level else []) + list(f.levels or [])
    for name, values in (("services", services), ("levels", levels)):
        if len(values) > MAX_LIST_VALUES:
            raise ValidationFailed(
                f"too many {name}",
                errors=[FieldError(name, f"at most {MAX_LIST_VALUES} values")],
            )
    start = parse_time(f.start_time, "start_time", now) if f.start_time is not None else None
    end = parse_time(f.end_time, "end_time", now) if f.end_time is not None else None
    if start is not None and end is not None and start > end:
        raise ValidationFailed(
            "start_time is after end_time",
            errors=[FieldError("start_time", "must not be after end_time")],
        )
    metadata = tuple(sorted((f.metadata or {}).items()))
    if len(metadata) > MAX_METADATA_FILTERS:
        raise ValidationFailed(
            "too many metadata filters",
            errors=[FieldError("metadata", f"at most {MAX_METADATA_FILTERS} fields")],
        )
    for key, value in metadata:
        _check_metadata_term(key, value)
    texts = [(name, getattr(f, name)) for name in _TEXT_FIELDS]
    texts += [("services", name) for name in services]
    for name, value in texts:
        if value is not None and "\x00" in value:
            raise ValidationFailed(
                f"{name} contains NUL", errors=[FieldError(name, "must not contain NUL")]
            )
    search_terms = parse_search(f.search) if f.search else ()
    return CompiledFilter(
        services=tuple(sorted(set(services))),
        levels=tuple(sorted({_level(v, "level") for v in levels})),
        min_level=_level(f.min_level, "min_level") if f.min_level else None,
        start=start,
        end=end,
        trace_id=f.trace_id,
        span_id=f.span_id,
        user_id=f.user_id,
        request_id=f.request_id,
        search_terms=search_terms,
        environment=f.environment,
        host=f.host,
        source=f.source,
        metadata=metadata,
    )


def _check_metadata_term(key: str, value: MetadataValue) -> None:
    field = f"metadata.{key}"
    if not key or len(key) > 128 or "\x00" in key:
        raise ValidationFailed(
            "bad metadata key",
            errors=[FieldError(field, "keys are 1-128 characters, without NUL")],
        )
    if isinstance(value, str) and ("\x00" in value or len(value) > 1024):
        raise ValidationFailed(
            "bad metadata value",
            errors=[FieldError(field, "string values are at most 1024 characters, without NUL")],
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationFailed(
            "bad metadata value", errors=[FieldError(field, "numbers must be finite")]
        )


def _like_pattern(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclass(frozen=True, slots=True)
class SqlWhere:
    """A WHERE-clause body and the parameters bound to its %s placeholders, in order."""

    clause: sql.Composed
    params: list[Any]


def where_sql(tenant_id: uuid.UUID, f: CompiledFilter, *, alias: str = "") -> SqlWhere:
    """`WHERE`-clause body for log_entries: the tenant first, then each filter term.

    Values are always bound parameters; only column names are composed. The time bounds
    are half-open: start <= timestamp < end. Search terms are substring matches ignoring
    ASCII case (ILIKE under the "C" collation, LIKE wildcards escaped), which the trigram
    index on `message COLLATE "C"` serves (services/janitor/closed_partitions.py builds it).
    """

    def col(name: str) -> sql.Composable:
        ident = sql.Identifier(name)
        return sql.SQL(".").join([sql.Identifier(alias), ident]) if alias else ident

    parts: list[sql.Composable] = []
    params: list[Any] = []

    def add(template: str, column: str, value: Any) -> None:
        parts.append(sql.SQL(template).format(col(column)))
        params.append(value)

    add("{} = %s", "tenant_id", tenant_id)
    if f.start is not None:
        add("{} >= %s", "timestamp", f.start)
    if f.end is not None:
        add("{} < %s", "timestamp", f.end)
    if len(f.services) == 1:
        add("{} = %s", "service_name", f.services[0])
    elif f.services:
        add("{} = ANY(%s)", "service_name", list(f.services))
    if len(f.levels) == 1:
        add("{} = %s", "level", f.levels[0])
    elif f.levels:
        add("{} = ANY(%s::int2[])", "level", list(f.levels))
    if f.min_level is not None:
        add("{} >= %s", "level", f.min_level)
    for name in _EXACT_FIELDS:
        value = getattr(f, name)
        if value is not None:
            add("{} = %s", name, value)
    for term in f.search_terms:
        add('({} COLLATE "C") ILIKE %s', "message", _like_pattern(term))
    for term in f.exclude_terms:
        add('({} COLLATE "C") NOT ILIKE %s', "message", _like_pattern(term))
    if f.metadata:
        add("{} @> %s::jsonb", "metadata", msgspec.json.encode(dict(f.metadata)).decode())
    return SqlWhere(sql.SQL(" AND ").join(parts), params)


_EXACT_FIELDS = ("trace_id", "span_id", "user_id", "request_id", "environment", "host", "source")


def matches(tenant_id: uuid.UUID, f: CompiledFilter, entry_tenant: uuid.UUID,
            entry: Mapping[str, Any]) -> bool:  # fmt: skip
    """The Python twin of `where_sql`, for entries that never reach a query (live tail).

    `entry` holds the stored columns: level as its integer, timestamp as an aware
    datetime, metadata as a dict (or None).
    """
    if entry_tenant != tenant_id:
        return False
    ts: datetime = entry["timestamp"]
    if f.start is not None and ts < f.start:
        return False
    if f.end is not None and ts >= f.end:
        return False
    if f.services and entry["service_name"] not in f.services:
        return False
    level = entry["level"]
    if f.levels and level not in f.levels:
        return False
    if f.min_level is not None and level < f.min_level:
        return False
    for name in _EXACT_FIELDS:
        wanted = getattr(f, name)
        if wanted is not None and entry.get(name) != wanted:
            return False
    if f.search_terms:
        message = fold_case(entry["message"])
        if not all(fold_case(term) in message for term in f.search_terms):
            return False
    if f.exclude_terms:
        message = fold_case(entry["message"])
        if any(fold_case(term) in message for term in f.exclude_terms):
            return False
    if f.metadata:
        metadata = entry.get("metadata") or {}
        for key, value in f.metadata:
            if key not in metadata or not _json_equal(metadata[key], value):
                return False
    return True


def _json_equal(stored: Any, wanted: MetadataValue) -> bool:
    """JSONB containment of one scalar: true is not 1, strings compare exactly, numbers
    compare as exact decimals (1 equals 1.0, but 2**60 is not the float 2.0**60)."""
    if isinstance(wanted, bool) or isinstance(stored, bool):
        return type(stored) is type(wanted) and stored == wanted
    if isinstance(wanted, int | float):
        return isinstance(stored, int | float) and _decimal(stored) == _decimal(wanted)
    return isinstance(stored, str) and stored == wanted


def _decimal(number: int | float) -> Decimal:
    # repr() is the shortest text that reads back as the same float: what JSON carries.
    return Decimal(repr(number)) if isinstance(number, float) else Decimal(number)
