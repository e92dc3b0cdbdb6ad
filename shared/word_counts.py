"""Word counts of past hours: a common word counted over days without reading its rows.

A search term must appear in the message as a substring, ignoring ASCII case
(shared/filters.py). Counting a common word over days therefore checks every matching
entry against its row: "expired" is in 725k of the busiest benchmark tenant's 5.6M
entries, and counting them took 0.9-1 s however the rows were laid out (README, "Where the
largest tenant's first count goes"). But past hours change only by late entries and
retention. So the janitor (services/janitor/word_counts.py) counts *spans*: each closed
UTC day, and before that each hour of it. It splits each of a tenant's messages in the
span into *tokens*, the longest runs of ASCII letters and digits after folding ASCII
case, and keeps:

- for each *word*, a token in at least WORD_MIN_ROWS of the tenant's entries in the
  span: per service and level, the entries holding it or a word containing it, in all
  and per quarter hour, and the first and last of them (log_word_counts);
- what the other tokens are: those of letters only as a list, the rest (ids, numbers,
  and letters past a cap) as the set of their 1-, 2- and 3-character pieces (a bitmap).

A term of letters and digits only can match a message only inside one token (a match
is a run of letters and digits, and a token is the longest such run). So the entries it
matches are those with a token containing it. When, in a span, the words containing the
term all contain one of them (the term's own word, and longer ones: "payment",
"payments") and, by the list and the bitmap, no other token can, the entries matching
the term are exactly those holding a word that contains that one: their count is read
from its cells. No word and no other token: none. Otherwise (two words neither inside
the other, such as "payment" and "paypal" for "pay", or a token the bitmap cannot rule
out) the span is counted from rows, as before. So the count is exact whichever way.
Spans serve the counts not grouped by time (stats, the services list, alert rules) and
histograms of whole quarter hours, hours or days: each cell holds its entries per
quarter hour of the span too, so a day the window cuts (a week ending now starts inside
a day) answers for its whole hours in the window. Finer buckets and the partial hours at
the window's edges count rows (and keep their hours, shared/kept_hours.py).

A span's counts are used only while the tenant's count of entries in it in the rollups
is still the one they were made with (`rows`): a late entry or a deletion changes it, and
the janitor counts the span again.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from psycopg import AsyncConnection, sql

from shared.filters import CompiledFilter, fold_case

DAY = timedelta(days=1)
# The finest time a word's cells hold its entries by (sql/0020_word_quarters.sql): the
# web explorer's buckets over a day.
QUARTER = timedelta(minutes=15)
QUARTERS_PER_SPAN = DAY // QUARTER  # the multiplier of a cell's position in its keys

# A token in at least this many of a tenant's entries in a span gets counts of its own;
# a term found in fewer is counted from the search index about as quickly.
WORD_MIN_ROWS = 100
_TOKEN = re.compile(rb"[a-z0-9]+")
_SEARCHABLE = re.compile(r"[a-z0-9]+")
_ALPHABET = b"abcdefghijklmnopqrstuvwxyz0123456789"
_CODE = {byte: i for i, byte in enumerate(_ALPHABET)}
_SIZE = len(_ALPHABET)
# Bit numbers of 1-character pieces first, then of 2, then of 3.
GRAM_BITS = _SIZE + _SIZE**2 + _SIZE**3
GRAM_BYTES = (GRAM_BITS + 7) // 8
_OFFSET = {1: 0, 2: _SIZE, 3: _SIZE + _SIZE**2}


def tokens(message: str) -> set[bytes]:
    """The message's distinct tokens. `bytes.lower` folds ASCII letters only, as the
    search does; a byte of a multi-byte character is never a letter or digit here."""
    return set(_TOKEN.findall(message.encode().lower()))


def gram_bit(piece: bytes) -> int:
    """The bit of a 1- to 3-character piece of a token."""
    code = 0
    for byte in piece:
        code = code * _SIZE + _CODE[byte]
    return _OFFSET[len(piece)] + code


def add_grams(token: bytes, bitmap: bytearray) -> None:
    """Set the bits of every 1-, 2- and 3-character piece of `token`."""
    codes = [_CODE[byte] for byte in token]
    n = len(codes)
    for i, a in enumerate(codes):
        bit = a
        bitmap[bit >> 3] |= 1 << (bit & 7)
        if i + 1 < n:
            bit = _OFFSET[2] + a * _SIZE + codes[i + 1]
            bitmap[bit >> 3] |= 1 << (bit & 7)
            if i + 2 < n:
                bit = _OFFSET[3] + (a * _SIZE + codes[i + 1]) * _SIZE + codes[i + 2]
                bitmap[bit >> 3] |= 1 << (bit & 7)


def term_bits(term: str) -> list[int]:
    """The bits a token containing `term` must have: those of its pieces of three (or
    of its whole length, when shorter)."""
    raw = term.encode()
    width = min(3, len(raw))
    return sorted({gram_bit(raw[i : i + width]) for i in range(len(raw) - width + 1)})


def counted_term(f: CompiledFilter, dims: Sequence[str], bucket: timedelta | None) -> str | None:
    """The one search term of `f`, folded, when its count can come from the word counts:
    a single term of ASCII letters and digits, no other term the cells lack (the
    environment, ids, host, source, metadata, excluded words), grouped by service and
    level at most, and by whole quarter hours or not by time. None otherwise."""
    if len(f.search_terms) != 1 or (bucket is not None and bucket % QUARTER):
        return None
    if not {"service_name", "level"}.issuperset(dims):
        return None
    others = (f.exclude_terms, f.trace_id, f.span_id, f.user_id, f.request_id, f.host,
              f.source, f.metadata, f.environment)  # fmt: skip
    if any(others):
        return None
    term = fold_case(f.search_terms[0])
    return term if _SEARCHABLE.fullmatch(term) else None


# The rollups' count of the tenant's entries in a span `s` of log_word_spans: a day's
# from its daily cells, an hour's from its hourly ones (services/janitor/word_counts.py
# counts a span when both are complete).
ROLLUP_ROWS_SQL = """
CASE WHEN s.until = s.start + interval '1 day'
     THEN (SELECT coalesce(sum(c.count), 0) FROM log_counts_daily c
           WHERE c.tenant_id = s.tenant_id AND c.day = s.start)
     ELSE (SELECT coalesce(sum(c.count), 0) FROM log_counts_hourly c
           WHERE c.tenant_id = s.tenant_id AND c.hour >= s.start AND c.hour < s.until)
END
"""

# The tenant's spans meeting [first, last) whose counts still hold (the rollups' count
# of the span is the one they were made with) and in which no token but a word can hold
# the term; with the words that contain it.
_SPANS_SQL = f"""
SELECT s.start, s.until, array(SELECT w FROM unnest(s.words) AS w WHERE strpos(w, %(term)s) > 0)
FROM log_word_spans s
WHERE s.tenant_id = %(tenant)s AND s.start < %(last)s AND s.until > %(first)s
  AND s.rows = {ROLLUP_ROWS_SQL}
  AND NOT EXISTS (SELECT 1 FROM unnest(s.rare_words) AS r WHERE strpos(r, %(term)s) > 0)
  AND NOT (SELECT bool_and(get_bit(s.rare_grams, b) = 1) FROM unnest(%(bits)s::int[]) AS b)
"""


class _Wanted(NamedTuple):
    """A span's word, and the part of the span asked: its quarter hours [lo, hi), counted
    from the span's start."""

    word: str
    start: datetime
    lo: int
    hi: int


async def word_rows(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    f: CompiledFilter,
    term: str,
    dims: Sequence[str],
    first: datetime,
    last: datetime,
    *,
    bucket: timedelta | None = None,
) -> tuple[list[tuple[Any, ...]], list[tuple[datetime, datetime]]]:
    """The counts of `term` (from `counted_term`) in [first, last) (whole hours) where
    the word counts answer, as spans_statement's rows, and the [lo, hi) they answer for.
    f's services and levels narrow the cells. Rows per span, service and level (the
    span's start, *dims, n, first, last, 0); for a day cut by first or last, the quarter
    hours of the first and last entries instead (…, n, first quarter, last quarter, 900:
    their exact times are in those, see rollups.exact_time). `bucket` (whole quarter
    hours dividing an hour): rows per bucket of each span instead (the bucket, *dims, n,
    the bucket twice, its length in seconds)."""
    cur = await conn.execute(
        _SPANS_SQL,
        {"tenant": tenant_id, "first": first, "last": last, "term": term,
         "bits": term_bits(term)},
        prepare=False,
    )  # fmt: skip
    served: list[tuple[datetime, datetime]] = []
    whole: list[_Wanted] = []
    parts: list[_Wanted] = []
    for start, until, words in await cur.fetchall():
        inner = _innermost(words)
        if words and inner is None:  # no word inside all the others: counted from rows
            continue
        lo, hi = max(start, first), min(until, last)
        served.append((lo, hi))
        if inner is not None:
            cut = (lo, hi) != (start, until)
            wanted = _Wanted(inner, start, (lo - start) // QUARTER, (hi - start) // QUARTER)
            (parts if bucket or cut else whole).append(wanted)
    rows = []
    if whole:
        rows += await _cells(conn, tenant_id, f, dims, whole, _SPANS)
    if parts:
        shape = _CUT_SPANS if bucket is None else _buckets(bucket)
        rows += await _cells(conn, tenant_id, f, dims, parts, shape)
    return rows, served


def _innermost(words: Sequence[str]) -> str | None:
    """The word inside all the others, if one is (its cells count the entries holding
    any of them); None for none, or for words of which none is inside all the others."""
    if not words:
        return None
    shortest = min(words, key=len)
    return shortest if all(shortest in word for word in words) else None


class _Shape(NamedTuple):
    """How _cells reads a word's cells (u) and groups them: by `key`, with the first and
    last entries and the step that says how exact they are (as spans_statement)."""

    cells: sql.Composable
    key: sql.Composable
    first: sql.Composable
    last: sql.Composable
    step: int


# One cell per service and level of a span, with its first and last entries.
_SPAN_CELLS = sql.SQL(
    "unnest(c.services, c.levels, c.counts, c.firsts, c.lasts) "
    "AS u(service_name, level, count, first, last)"
)
_SPANS = _Shape(_SPAN_CELLS, sql.SQL("c.start"), sql.SQL("u.first"), sql.SQL("u.last"), 0)
# A cell's quarter hours in the part of the span asked (sql/0020_word_quarters.sql:
# quarter_keys holds the cell's position times 96 plus the quarter), summed per bucket
# of `size` quarters: one cell per bucket with entries, its start for its first and last
# entries. Summed before the cell's service and level are looked up, so that they are
# looked up once per bucket, not per quarter: the busiest benchmark tenant's week by the
# hour read its word's 40k quarter cells in 23 ms this way, 34 the other.
_BUCKET_CELLS = """
(SELECT c.start + b.slot * {width}, c.services[b.pos + 1], c.levels[b.pos + 1], b.count
 FROM (SELECT q.key / {n} AS pos, mod(q.key, {n}) / {size} AS slot, sum(q.count) AS count
       FROM unnest(c.quarter_keys, c.quarter_counts) AS q(key, count)
       WHERE mod(q.key, {n}) >= w.lo AND mod(q.key, {n}) < w.hi
       GROUP BY 1, 2) AS b
) AS u(start, service_name, level, count)
"""


def _buckets(bucket: timedelta) -> _Shape:
    """Cells summed per `bucket` (whole quarter hours dividing the span: since a span
    starts on the hour, aligned as the rollups' buckets are, rollups.floor_to)."""
    cells = sql.SQL(_BUCKET_CELLS).format(
        width=sql.Literal(bucket), n=sql.Literal(QUARTERS_PER_SPAN), size=bucket // QUARTER
    )
    start = sql.SQL("u.start")
    return _Shape(cells, start, start, start, int(bucket.total_seconds()))


# A span cut by the window, summed per span: its entries' exact times are then found in
# their quarter hour (rollups.exact_time).
_CUT_SPANS = _buckets(QUARTER)._replace(key=sql.SQL("c.start"))


async def _cells(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    f: CompiledFilter,
    dims: Sequence[str],
    wanted: Sequence[_Wanted],
    shape: _Shape,
) -> list[tuple[Any, ...]]:
    """The cells of the words of `wanted` in their parts [lo, hi), grouped by the
    shape's key and `dims`."""
    conditions = [sql.SQL("c.tenant_id = %s")]
    params: list[Any] = [*map(list, zip(*wanted, strict=True)), tenant_id]
    if f.services:
        conditions.append(sql.SQL("u.service_name = ANY(%s)"))
        params.append(list(f.services))
    if f.levels:
        conditions.append(sql.SQL("u.level = ANY(%s::int2[])"))
        params.append(list(f.levels))
    if f.min_level is not None:
        conditions.append(sql.SQL("u.level >= %s"))
        params.append(f.min_level)
    keys = [shape.key, *(sql.SQL("u.{}").format(sql.Identifier(d)) for d in dims)]
    statement = sql.SQL(
        "SELECT {keys}, sum(u.count), min({first}), max({last}), {step} "
        "FROM log_word_counts c "
        "JOIN unnest(%s::text[], %s::timestamptz[], %s::int[], %s::int[]) "
        "AS w(word, start, lo, hi) ON c.word = w.word AND c.start = w.start "
        "CROSS JOIN LATERAL {cells} "
        "WHERE {conditions} GROUP BY {groups}"
    ).format(
        cells=shape.cells,
        first=shape.first,
        last=shape.last,
        step=sql.Literal(shape.step),
        keys=sql.SQL(", ").join(keys),
        conditions=sql.SQL(" AND ").join(conditions),
        groups=sql.SQL(", ").join(sql.SQL(str(i)) for i in range(1, len(keys) + 1)),
    )
    cur = await conn.execute(statement, params, prepare=False)
    return [tuple(row) for row in await cur.fetchall()]
