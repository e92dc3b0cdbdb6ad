"""Word counts of closed days: a common word counted over days without reading its rows.

A search term must appear in the message as a substring, ignoring ASCII case
(shared/filters.py). Counting a common word over days therefore checks every matching
entry against its row: "expired" is in 725k of the busiest benchmark tenant's 5.6M
entries, and counting them took 0.9-1 s however the rows were laid out (README, "Where the
largest tenant's first count goes"). But a closed day changes only by late entries and
retention. So once a day is closed the janitor splits each of a tenant's messages that
day into *tokens*, the longest runs of ASCII letters and digits after folding ASCII case
(services/janitor/closed_day_words.py), and keeps:

- for each *word*, a token in at least WORD_MIN_ROWS of the tenant's entries that day:
  per service and level, the entries holding it, and the first and last of them
  (log_word_counts);
- what the other tokens are: those of letters only as a list, the rest (ids, numbers,
  and letters past a cap) as the set of their 1-, 2- and 3-character pieces (a bitmap).

A term of letters and digits only can match a message only inside one token (a match
is a run of letters and digits, and a token is the longest such run). So the entries it
matches are those with a token containing it. When, on a day, exactly one word contains
the term and, by the list and the bitmap, no other token can, the entries matching the
term are exactly those holding that word: their count is read from its cells.
No word and no other token: none. Otherwise (two words, or a token the bitmap cannot
rule out) the day is counted from rows, as before. So the count is exact whichever way.
Counts per day serve the counts not grouped by time (stats, the services list, alert
rules) and histograms of whole days; finer ones count rows (and keep their hours,
shared/kept_hours.py).

A day's counts are used only while the tenant's count of entries that day in the rollups
is still the one they were made with (`rows`): a late entry or a deletion changes it, and
the janitor counts the day again on its next run.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection, sql

from shared.filters import CompiledFilter, fold_case

DAY = timedelta(days=1)

# A token in at least this many of a tenant's entries of a day gets counts of its own;
# a term found in fewer is counted from the search index as quickly.
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
    """The one search term of `f`, folded, when its count per day can come from the word
    counts: a single term of ASCII letters and digits, no other term the cells lack (the
    environment, ids, host, source, metadata, excluded words), grouped by service and
    level at most, and by whole days or not by time. None otherwise."""
    if len(f.search_terms) != 1 or (bucket is not None and bucket % DAY):
        return None
    if not {"service_name", "level"}.issuperset(dims):
        return None
    others = (f.exclude_terms, f.trace_id, f.span_id, f.user_id, f.request_id, f.host,
              f.source, f.metadata, f.environment)  # fmt: skip
    if any(others):
        return None
    term = fold_case(f.search_terms[0])
    return term if _SEARCHABLE.fullmatch(term) else None


# The days of `days` counted for the tenant whose counts still hold (the rollups' count
# of the day is the one they were made with) and on which no token but a word can hold
# the term; with the words that contain it.
_DAYS_SQL = """
SELECT d.day, array(SELECT w FROM unnest(d.words) AS w WHERE strpos(w, %(term)s) > 0)
FROM log_word_days d
WHERE d.tenant_id = %(tenant)s AND d.day = ANY(%(days)s)
  AND d.rows = (SELECT coalesce(sum(c.count), 0) FROM log_counts_daily c
                WHERE c.tenant_id = d.tenant_id AND c.day = d.day)
  AND NOT EXISTS (SELECT 1 FROM unnest(d.rare_words) AS r WHERE strpos(r, %(term)s) > 0)
  AND NOT (SELECT bool_and(get_bit(d.rare_grams, b) = 1) FROM unnest(%(bits)s::int[]) AS b)
"""


async def word_rows(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    f: CompiledFilter,
    term: str,
    dims: Sequence[str],
    days: Sequence[datetime],
) -> tuple[list[tuple[Any, ...]], set[datetime]]:
    """The counts of `term` (from `counted_term`) on those of `days` (whole UTC days)
    the word counts answer, as spans_statement's rows (day, *dims, n, first, last, 0),
    and those days. f's services and levels narrow the cells."""
    if not days:
        return [], set()
    cur = await conn.execute(
        _DAYS_SQL,
        {"tenant": tenant_id, "days": list(days), "term": term, "bits": term_bits(term)},
        prepare=False,
    )
    served: set[datetime] = set()
    wanted: dict[datetime, str] = {}
    for day, words in await cur.fetchall():
        if len(words) > 1:  # an entry may hold both: counted from rows
            continue
        served.add(day)
        if words:
            wanted[day] = words[0]
    if not wanted:
        return [], served
    return await _cells(conn, tenant_id, f, dims, wanted), served


async def _cells(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    f: CompiledFilter,
    dims: Sequence[str],
    wanted: dict[datetime, str],
) -> list[tuple[Any, ...]]:
    """The word's cells on each day of `wanted`, grouped by day and `dims`."""
    conditions = [sql.SQL("c.tenant_id = %s")]
    params: list[Any] = [list(wanted.values()), list(wanted), tenant_id]
    if f.services:
        conditions.append(sql.SQL("u.service_name = ANY(%s)"))
        params.append(list(f.services))
    if f.levels:
        conditions.append(sql.SQL("u.level = ANY(%s::int2[])"))
        params.append(list(f.levels))
    if f.min_level is not None:
        conditions.append(sql.SQL("u.level >= %s"))
        params.append(f.min_level)
    keys = [sql.SQL("c.day"), *(sql.SQL("u.{}").format(sql.Identifier(d)) for d in dims)]
    statement = sql.SQL(
        "SELECT {keys}, sum(u.count), min(u.first), max(u.last), 0 "
        "FROM log_word_counts c "
        "JOIN unnest(%s::text[], %s::timestamptz[]) AS w(word, day) "
        "ON c.word = w.word AND c.day = w.day "
        "CROSS JOIN LATERAL unnest(c.services, c.levels, c.counts, c.firsts, c.lasts) "
        "AS u(service_name, level, count, first, last) "
        "WHERE {conditions} GROUP BY {groups}"
    ).format(
        keys=sql.SQL(", ").join(keys),
        conditions=sql.SQL(" AND ").join(conditions),
        groups=sql.SQL(", ").join(sql.SQL(str(i)) for i in range(1, len(keys) + 1)),
    )
    cur = await conn.execute(statement, params, prepare=False)
    return [tuple(row) for row in await cur.fetchall()]
