"""The filter model: `where_sql` (through a real table) and `matches` agree on every entry,
and filters are validated before they reach either."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg.types.json import Jsonb

from shared.errors import ValidationFailed
from shared.filters import (
    LogFilter,
    compile_filter,
    fold_case,
    matches,
    parse_search,
    parse_time,
    where_sql,
)

NOW = datetime.now(UTC).replace(microsecond=0)
# Today's and tomorrow's partitions exist in every test database (PARTITIONS_AHEAD).
DAY_START = NOW.replace(hour=0, minute=0, second=0)

# Letters whose case folding differs between libc, Python and ASCII, LIKE wildcards,
# the escape character and quotes: where a naive twin would disagree with SQL.
ALPHABET = [*'abAB xyXY%_\\"-:.1', "É", "é", "İ", "\u0131", "ß", "Σ", "ς", "\u212a"]
WORDS = st.text(alphabet=ALPHABET, min_size=0, max_size=24)
SMALL = st.sampled_from(["a", "A", "b", "x y"])
NUMBERS = st.sampled_from([0, 1, -1, 2**60, 1.0, 1.5, -0.0, 0.1, 1e16, 2.0**60])
SCALARS = st.one_of(NUMBERS, st.booleans(), SMALL)
METADATA_VALUES = st.one_of(SCALARS, st.none(), st.lists(st.integers(0, 2), max_size=2))
METADATA_KEYS = st.sampled_from(["code", "Code", "n", "flag"])

entries = st.fixed_dictionaries(
    {
        "service_name": st.sampled_from(["auth", "Auth", "pay", "gateway"]),
        "level": st.integers(1, 5),
        "timestamp": st.integers(0, 2 * 86_400 - 1).map(
            lambda s: DAY_START + timedelta(seconds=s, microseconds=s % 7)
        ),
        "message": WORDS,
        "trace_id": st.none() | SMALL,
        "span_id": st.none() | SMALL,
        "user_id": st.none() | SMALL,
        "request_id": st.none() | SMALL,
        "environment": st.none() | st.sampled_from(["production", "staging"]),
        "host": st.none() | SMALL,
        "source": st.none() | SMALL,
        "metadata": st.none() | st.dictionaries(METADATA_KEYS, METADATA_VALUES, max_size=3),
    }
)

LEVEL_NAMES = st.sampled_from(["DEBUG", "info", "WARN", "warning", "ERR", "FATAL", "critical"])
TIMES = st.integers(0, 2 * 86_400).map(
    lambda s: (DAY_START + timedelta(seconds=s)).isoformat().replace("+00:00", "Z")
)


# Case variants a search term may take: ASCII ones must match, the others must not.
CASE_VARIANTS = {
    "É": "Éé",
    "é": "éÉ",
    "İ": "İi",
    "\u0131": "\u0131I",
    "Σ": "Σσς",
    "ς": "ςΣ",
    "\u212a": "\u212akK",
}


def case_variants(text: str) -> st.SearchStrategy[str]:
    chars = [
        st.sampled_from(CASE_VARIANTS.get(c, c.swapcase() + c if c.isascii() else c)) for c in text
    ]
    return st.tuples(*chars).map("".join)


def number_variants(value: Any) -> st.SearchStrategy[Any]:
    """The same number spelled as int and as float (equal or not as exact decimals)."""
    options = [value]
    if isinstance(value, int) and not isinstance(value, bool):
        options.append(float(value))
    if isinstance(value, float) and value.is_integer():
        options.append(int(value))
    return st.sampled_from(options)


@st.composite
def search_from(draw: st.DrawFn, rows: list[dict[str, Any]]) -> str:
    """A search that often hits: a piece of some message, its letters' case varied, as a
    word or a quoted phrase, maybe next to a random word."""
    messages = [r["message"] for r in rows if r["message"].strip()]
    if not messages or draw(st.integers(0, 3)) == 0:
        return draw(WORDS.filter(bool))
    message = draw(st.sampled_from(messages))
    i = draw(st.integers(0, len(message) - 1))
    j = draw(st.integers(i + 1, min(i + 4, len(message))))
    term = draw(case_variants(message[i:j]))
    search = f'"{term}"' if draw(st.booleans()) else term
    if draw(st.integers(0, 3)) == 0:
        search += " " + draw(WORDS)
    return search


@st.composite
def metadata_from(draw: st.DrawFn, rows: list[dict[str, Any]]) -> dict[str, Any]:
    stored = [
        (k, v)
        for r in rows
        for k, v in (r["metadata"] or {}).items()
        if v is not None and not isinstance(v, list)
    ]
    if not stored or draw(st.integers(0, 3)) == 0:
        return draw(st.dictionaries(METADATA_KEYS, SCALARS, min_size=1, max_size=2))
    key, value = draw(st.sampled_from(stored))
    return {key: draw(number_variants(value))}


TERMS: dict[str, st.SearchStrategy[Any]] = {
    "service_name": st.sampled_from(["auth", "pay"]),
    "services": st.lists(st.sampled_from(["Auth", "pay", "gateway"]), max_size=2),
    "level": LEVEL_NAMES,
    "levels": st.lists(LEVEL_NAMES, max_size=2),
    "min_level": LEVEL_NAMES,
    "start_time": TIMES,
    "end_time": TIMES,
    "trace_id": SMALL,
    "span_id": SMALL,
    "user_id": SMALL,
    "request_id": SMALL,
    "environment": st.sampled_from(["production", "staging"]),
    "host": SMALL,
    "source": SMALL,
}


@st.composite
def filters(draw: st.DrawFn, rows: list[dict[str, Any]]) -> LogFilter:
    """A few terms at a time (a filter of many terms matches nothing), search and
    metadata terms often taken from the rows so that they hit."""
    chosen = draw(st.sets(st.sampled_from(sorted(TERMS)), max_size=3))
    values = {name: draw(TERMS[name]) for name in sorted(chosen)}
    start, end = values.get("start_time"), values.get("end_time")
    if start is not None and end is not None and start > end:
        values["start_time"], values["end_time"] = end, start
    if draw(st.booleans()):
        values["search"] = draw(search_from(rows))
    if draw(st.booleans()):
        values["metadata"] = draw(metadata_from(rows))
    return LogFilter(**values)


COLUMNS = (
    "timestamp", "level", "service_name", "message", "trace_id", "span_id", "user_id",
    "request_id", "metadata", "source", "host", "environment",
)  # fmt: skip


def insert(
    db: psycopg.Connection, tenant: uuid.UUID, rows: list[dict[str, Any]]
) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in rows]
    with db.cursor() as cur:
        cur.executemany(
            sql.SQL("INSERT INTO log_entries (id, tenant_id, {}) VALUES ({})").format(
                sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
                sql.SQL(", ").join(sql.Placeholder() * (len(COLUMNS) + 2)),
            ),
            [
                (
                    i,
                    tenant,
                    r["timestamp"],
                    r["level"],
                    r["service_name"],
                    r["message"],
                    r["trace_id"],
                    r["span_id"],
                    r["user_id"],
                    r["request_id"],
                    None if r["metadata"] is None else Jsonb(r["metadata"]),
                    r["source"],
                    r["host"],
                    r["environment"],
                )
                for i, r in zip(ids, rows, strict=True)
            ],
        )
    return ids


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_sql_and_matches_select_the_same_entries(
    db: psycopg.Connection, data: st.DataObject
) -> None:
    rows = data.draw(st.lists(entries, max_size=12), label="rows")
    f = data.draw(filters(rows), label="filter")
    compiled = compile_filter(f, NOW)
    tenant, other = uuid.uuid4(), uuid.uuid4()
    ids = insert(db, tenant, rows)
    insert(db, other, rows)  # the same entries under another tenant: never selected
    where = where_sql(tenant, compiled)
    query = sql.SQL("SELECT id FROM log_entries WHERE {}").format(where.clause)
    from_sql = {row[0] for row in db.execute(query, where.params)}
    from_python = {
        i for i, r in zip(ids, rows, strict=True) if matches(tenant, compiled, tenant, r)
    }
    assert from_sql == from_python
    assert not any(matches(tenant, compiled, other, r) for r in rows)


def test_search_ignores_ascii_case_only() -> None:
    f = compile_filter(LogFilter(search="ÉRROR fail"))
    entry = {"timestamp": NOW, "service_name": "s", "level": 2, "message": "Érror: FAILED"}
    tenant = uuid.uuid4()
    assert matches(tenant, f, tenant, entry)
    entry["message"] = "érror: FAILED"  # É and é are different letters to the search
    assert not matches(tenant, f, tenant, entry)
    assert fold_case("İÉAbc") == "İÉabc"


def test_search_terms_are_words_and_quoted_phrases() -> None:
    assert parse_search('timeout "connection refused"  db') == (
        "timeout",
        "connection refused",
        "db",
    )
    assert parse_search('a a "" "a"') == ("a",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("now-15m", NOW - timedelta(minutes=15)),
        ("now - 2h", NOW - timedelta(hours=2)),
        ("now-7d", NOW - timedelta(days=7)),
        ("now-1w", NOW - timedelta(weeks=1)),
        ("2024-01-15T10:30:00Z", datetime(2024, 1, 15, 10, 30, tzinfo=UTC)),
        ("2024-01-15T12:30:00+02:00", datetime(2024, 1, 15, 10, 30, tzinfo=UTC)),
    ],
)
def test_times_are_rfc3339_with_zone_or_relative(text: str, expected: datetime) -> None:
    assert parse_time(text, "start_time", NOW) == expected


@pytest.mark.parametrize(
    ("f", "field"),
    [
        (LogFilter(start_time="2024-01-15T10:30:00"), "start_time"),  # no zone
        (LogFilter(start_time="yesterday"), "start_time"),
        (LogFilter(start_time="now-99999999999d"), "start_time"),
        (LogFilter(start_time="now", end_time="now-1h"), "start_time"),
        (LogFilter(level="LOUD"), "level"),
        (LogFilter(min_level="3"), "min_level"),
        (LogFilter(services=[f"s{i}" for i in range(51)]), "services"),
        (LogFilter(services=["a\x00"]), "services"),
        (LogFilter(trace_id="a\x00b"), "trace_id"),
        (LogFilter(metadata={"code": "x\x00"}), "metadata.code"),
        (LogFilter(metadata={"n": float("inf")}), "metadata.n"),
        (LogFilter(metadata={"": 1}), "metadata."),
    ],
)
def test_bad_filters_are_refused_naming_the_field(f: LogFilter, field: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        compile_filter(f, NOW)
    assert raised.value.errors[0].field == field


def test_equal_filters_have_equal_canonical_forms() -> None:
    a = compile_filter(LogFilter(services=["b", "a"], level="warning", search="x  y"), NOW)
    b = compile_filter(LogFilter(service_name="a", services=["b"], levels=["WARN"], search="x y"))
    assert a.canonical() == b.canonical()
    assert a.canonical() != compile_filter(LogFilter(services=["a"]), NOW).canonical()


def test_default_window_applies_only_without_a_start() -> None:
    day = timedelta(hours=24)
    open_ended = compile_filter(LogFilter(), NOW).with_default_window(day, NOW)
    assert (open_ended.start, open_ended.end) == (NOW - day, None)
    ending = compile_filter(LogFilter(end_time="now-1h"), NOW).with_default_window(day, NOW)
    assert ending.start == NOW - timedelta(hours=25)
    started = compile_filter(LogFilter(start_time="now-5m"), NOW).with_default_window(day, NOW)
    assert started.start == NOW - timedelta(minutes=5)
    assert compile_filter(LogFilter(start_time="now", end_time="now"), NOW).is_empty_range


# (stored, wanted, matches)
METADATA_CASES: list[tuple[Any, Any, bool]] = [
    (1, 1.0, True),
    (2**60, 2.0**60, False),  # 1152921504606846976 is not 1.152921504606847e18
    (1e16, 10**16, True),
    (0.1, 0.1, True),
    (-0.0, 0, True),
    (True, 1, False),
    ("1", 1, False),
    ([1, 2], 1, False),  # containment of a scalar does not look into arrays
    ("AUTH_001", "auth_001", False),
]


def test_metadata_terms_compare_like_jsonb_containment(db: psycopg.Connection) -> None:
    for stored, wanted, expected in METADATA_CASES:
        row = {c: None for c in COLUMNS} | {
            "timestamp": NOW,
            "level": 2,
            "service_name": "s",
            "message": "m",
            "metadata": {"k": stored},
        }
        tenant = uuid.uuid4()
        insert(db, tenant, [row])
        compiled = compile_filter(LogFilter(metadata={"k": wanted}), NOW)
        where = where_sql(tenant, compiled)
        query = sql.SQL("SELECT count(*) FROM log_entries WHERE {}").format(where.clause)
        case = (stored, wanted)
        assert db.execute(query, where.params).fetchone() == (int(expected),), case
        assert matches(tenant, compiled, tenant, row) is expected, case
