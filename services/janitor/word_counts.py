"""Counting the words of past hours, span by span (shared/word_counts.py says what for).

Each janitor run counts the spans that need it, for up to COUNT_SECONDS, oldest first:

- each closed day (LATE_ENTRY_GRACE after its end, its rollups compacted into
  log_counts_daily), per tenant, whole: it replaces the day's hour spans;
- before that, each hour of a day, from HOUR_AFTER past its end (its hourly rollups
  complete): a count over days then reads rows for at most the window's newest hour
  and HOUR_AFTER, and each hour is read once (the day once more when it closes);

when a span has no counts yet, or the rollups' count of its entries has changed since (a
late entry, a deletion), but not again within RECOUNT_AFTER of its last count (a trickle
of late entries would otherwise have a day read again every run). Counts of a span with
no entries left (retention removed them) are removed.

A span is counted in one REPEATABLE READ transaction, so the rows read and the rollups'
count of them are of one moment; cut short (SIGTERM cancels the statement,
services/janitor/__main__.py), it leaves nothing. Its rows are read twice, in batches
through a server-side cursor, so memory does not grow with the span: once to find which
tokens are words (their entries counted with a bounded table), once to count the words
per service, level and quarter hour and to note the other tokens.
"""

from __future__ import annotations

import logging
import time
import uuid
from array import array
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from services.janitor import metrics
from services.janitor.closed_partitions import LATE_ENTRY_GRACE
from shared.compaction import read_watermark
from shared.rollups import DAY, HOUR, floor_to
from shared.word_counts import (
    GRAM_BYTES,
    QUARTER,
    QUARTERS_PER_SPAN,
    ROLLUP_ROWS_SQL,
    WORD_MIN_ROWS,
    add_grams,
    tokens,
)

log = logging.getLogger("janitor")

# A run stops starting spans after this long; the next run goes on.
COUNT_SECONDS = 120
# An hour is counted this long after its end: a live stream's entries are in.
HOUR_AFTER = timedelta(minutes=5)
# A span counted is not counted again, however its rollups change, for this long.
RECOUNT_AFTER = timedelta(minutes=30)
# At most this many words per span, the most frequent (bounds the cells held and
# stored: a cell of a day holds its 96 quarter hours' counts, ~500 bytes in memory, and
# there is a cell per word, service and level); the others are noted as other tokens.
MAX_WORDS = 2000
# Other tokens of letters only kept as a list up to this many, then as pieces.
MAX_RARE_WORDS = 20_000
# The first pass's table of tokens: when it grows past this, the tokens seen least are
# dropped (a word missed that way is only noted as another token: still exact).
MAX_TALLY = 400_000
_BATCH = 10_000

# A span of the tenant with counts that hold, or counted too recently to count again.
_COUNTED = """
EXISTS (SELECT 1 FROM log_word_spans s
        WHERE s.tenant_id = c.tenant_id AND s.start = {start} AND s.until = {until}
          AND (s.rows = sum(c.count) OR s.counted_at > %(now)s - %(recount)s))
"""

# The oldest closed tenant-days to count.
_DAY_TODO_SQL = f"""
SELECT c.tenant_id, c.day, c.day + interval '1 day'
FROM log_counts_daily c
WHERE c.day + interval '1 day' <= %(closed)s
GROUP BY c.tenant_id, c.day
HAVING sum(c.count) > 0
   AND NOT {_COUNTED.format(start="c.day", until="c.day + interval '1 day'")}
ORDER BY c.day, c.tenant_id
LIMIT %(batch)s
"""

# The oldest hours of a tenant in [from, upto) to count. The hourly cells' key leads
# with the tenant: the tenants are found by skipping along it, then each one's hours
# are a range of it (a scan of the whole table took 50 ms at 10M rows, and grows with
# history).
_HOUR_TODO_SQL = f"""
WITH RECURSIVE tenants AS (
    (SELECT tenant_id FROM log_counts_hourly ORDER BY tenant_id LIMIT 1)
    UNION ALL
    SELECT (SELECT h.tenant_id FROM log_counts_hourly h WHERE h.tenant_id > t.tenant_id
            ORDER BY h.tenant_id LIMIT 1)
    FROM tenants t WHERE t.tenant_id IS NOT NULL
)
SELECT c.tenant_id, c.hour, c.hour + interval '1 hour'
FROM tenants t JOIN log_counts_hourly c ON c.tenant_id = t.tenant_id
WHERE c.hour >= %(from)s AND c.hour < %(upto)s
GROUP BY c.tenant_id, c.hour
HAVING sum(c.count) > 0
   AND NOT {_COUNTED.format(start="c.hour", until="c.hour + interval '1 hour'")}
ORDER BY c.hour, c.tenant_id
LIMIT %(batch)s
"""

_ROWS_SQL = f"""
SELECT {ROLLUP_ROWS_SQL}
FROM (SELECT %s::uuid AS tenant_id, %s::timestamptz AS start, %s::timestamptz AS until) AS s
"""

# Counts of spans whose entries are all gone.
_GONE_SQL = f"""
WITH gone AS (
    DELETE FROM log_word_spans s WHERE {ROLLUP_ROWS_SQL} = 0
    RETURNING s.tenant_id, s.start, s.words
)
DELETE FROM log_word_counts w USING gone g, unnest(g.words) AS x(word)
WHERE w.tenant_id = g.tenant_id AND w.word = x.word AND w.start = g.start
"""

# The tenant's spans starting in [start, until), and their counts.
_FORMER_SQL = """
WITH former AS (
    DELETE FROM log_word_spans
    WHERE tenant_id = %(tenant)s AND start >= %(start)s AND start < %(until)s
    RETURNING start, words
)
DELETE FROM log_word_counts w USING former f, unnest(f.words) AS x(word)
WHERE w.tenant_id = %(tenant)s AND w.word = x.word AND w.start = f.start
"""

_MESSAGES_SQL = """
SELECT message FROM log_entries
WHERE tenant_id = %s AND "timestamp" >= %s AND "timestamp" < %s
"""

_ENTRIES_SQL = """
SELECT service_name, level, "timestamp", message FROM log_entries
WHERE tenant_id = %s AND "timestamp" >= %s AND "timestamp" < %s
"""

_INSERT_SPAN_SQL = """
INSERT INTO log_word_spans (tenant_id, start, until, rows, words, rare_words, rare_grams)
VALUES (%s, %s, %s, %s, %s, %s, %s)
"""

_COPY_CELLS_SQL = """
COPY log_word_counts
    (tenant_id, word, start, services, levels, counts, firsts, lasts, quarter_keys,
     quarter_counts)
FROM STDIN
"""


def count_words(
    conn: psycopg.Connection,
    *,
    now: datetime | None = None,
    seconds: float = COUNT_SECONDS,
    keep_going: Callable[[], bool] = lambda: True,
    min_rows: int = WORD_MIN_ROWS,
) -> int:
    """Count the spans that need it as of `now` (default: the clock), for up to
    `seconds` and while `keep_going()`; returns how many were counted. `min_rows`: see
    WORD_MIN_ROWS. `conn` must be in autocommit mode."""
    now = now or datetime.now(UTC)
    gone = conn.execute(_GONE_SQL).rowcount
    if gone:
        log.info("removed %d word counts of spans with no entries left", gone)
    deadline = time.monotonic() + seconds
    counted = 0
    while todo := _spans_to_count(conn, now):
        for tenant_id, start, until in todo:
            if time.monotonic() >= deadline or not keep_going():
                return counted
            started = time.monotonic()
            words = count_span(conn, tenant_id, start, until, min_rows)
            day = until - start == DAY
            metrics.WORD_SPANS.labels("day" if day else "hour").inc()
            # A line per tenant-day; the hours (24 times as many) at DEBUG.
            log.log(logging.INFO if day else logging.DEBUG,
                    "counted %d words of tenant %s in [%s, %s) in %.1f s",
                    words, tenant_id, start, until, time.monotonic() - started)  # fmt: skip
            counted += 1
    return counted


# Spans found to count per query: a day's hours of ten tenants come in two queries.
_BATCH_SPANS = 200


def _spans_to_count(
    conn: psycopg.Connection, now: datetime
) -> list[tuple[uuid.UUID, datetime, datetime]]:
    """The next spans to count, oldest first: closed days first, then hours of a day
    not closed."""
    watermark = read_watermark(conn)
    closed = min(now - LATE_ENTRY_GRACE, watermark)
    params = {
        "now": now,
        "closed": closed,
        "recount": RECOUNT_AFTER,
        "from": floor_to(closed, DAY),
        "upto": floor_to(min(now - HOUR_AFTER, watermark), HOUR),
        "batch": _BATCH_SPANS,
    }
    for query in (_DAY_TODO_SQL, _HOUR_TODO_SQL):
        rows = conn.execute(query, params).fetchall()
        if rows:
            return [(row[0], row[1], row[2]) for row in rows]
    return []


def count_span(
    conn: psycopg.Connection,
    tenant_id: uuid.UUID,
    start: datetime,
    until: datetime,
    min_rows: int = WORD_MIN_ROWS,
) -> int:
    """Replace the tenant's word counts of the spans starting in [start, until) by those
    of [start, until); returns how many words it has."""
    span = (tenant_id, start, until)
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        fetched = conn.execute(_ROWS_SQL, span).fetchone()
        rows = int(fetched[0]) if fetched else 0
        messages = (row[0] for row in _rows(conn, _MESSAGES_SQL, span, "word_tally"))
        words = _frequent_tokens(messages, min_rows)
        tally = _Tally(words, start, (until - start) // QUARTER)
        for service, level, ts, message in _rows(conn, _ENTRIES_SQL, span, "word_cells"):
            tally.add(service, level, ts, message)
        counted = {word.decode(): cells for word, cells in tally.cells.items() if cells}
        conn.execute(_FORMER_SQL, {"tenant": tenant_id, "start": start, "until": until})
        conn.execute(
            _INSERT_SPAN_SQL,
            (tenant_id, start, until, rows, sorted(counted),
             sorted(w.decode() for w in tally.rare_words), bytes(tally.rare_grams)),
        )  # fmt: skip
        with conn.cursor().copy(_COPY_CELLS_SQL) as copy:
            for word, cells in counted.items():
                copy.write_row((tenant_id, word, start, *_columns(cells)))
    return len(counted)


def _rows(
    conn: psycopg.Connection, query: str, params: tuple[Any, ...], name: str
) -> Iterator[tuple[Any, ...]]:
    with conn.cursor(name=name) as cur:
        cur.itersize = _BATCH
        cur.execute(query, params)
        yield from cur


def _frequent_tokens(messages: Iterator[str], min_rows: int) -> frozenset[bytes]:
    """The tokens in at least `min_rows` messages (MAX_WORDS of the most frequent),
    counted in a table of at most MAX_TALLY tokens: past it, those seen least so far are
    dropped (so a token counted late may be missed: it is then another token)."""
    seen: dict[bytes, int] = {}
    floor = 1
    for message in messages:
        for token in tokens(message):
            seen[token] = seen.get(token, 0) + 1
        if len(seen) > MAX_TALLY:
            while len(seen) > MAX_TALLY // 2:
                seen = {t: n for t, n in seen.items() if n > floor}
                floor += 1
    frequent = sorted((n, t) for t, n in seen.items() if n >= min_rows)
    return frozenset(t for _, t in frequent[-MAX_WORDS:])


def _columns(cells: dict[tuple[str, int], list[Any]]) -> tuple[list[Any], ...]:
    """A word's cells as log_word_counts' arrays: services, levels, counts, firsts,
    lasts, quarter_keys and quarter_counts (sql/0020_word_quarters.sql)."""
    services, levels, counts, firsts, lasts = ([] for _ in range(5))
    quarter_keys: list[int] = []
    quarter_counts: list[int] = []
    for i, ((service, level), (n, first, last, per_quarter)) in enumerate(cells.items()):
        services.append(service)
        levels.append(level)
        counts.append(n)
        firsts.append(first)
        lasts.append(last)
        for quarter, in_quarter in enumerate(per_quarter):
            if in_quarter:
                quarter_keys.append(i * QUARTERS_PER_SPAN + quarter)
                quarter_counts.append(in_quarter)
    return services, levels, counts, firsts, lasts, quarter_keys, quarter_counts


class _Tally:
    """The second pass: cells of the words, the other tokens noted."""

    def __init__(self, words: frozenset[bytes], start: datetime, quarters: int) -> None:
        # word -> (service, level) -> [entries, first, last, entries in each quarter hour]
        self.cells: dict[bytes, dict[tuple[str, int], list[Any]]] = {w: {} for w in words}
        # Each word and the words inside it, itself too: an entry is counted once for
        # every word inside any of its words, so that a word's cells hold the entries
        # with a word containing it ("payment": those with "payment" or "payments"),
        # which are the entries a search for it matches unless another token holds it.
        self.inside = _words_inside(words)
        self.rare_words: set[bytes] = set()
        self.rare_grams = bytearray(GRAM_BYTES)
        self.start = start
        # An array of 4-byte counts: a list of 96 would take twice the memory.
        self.no_quarters = array("i", bytes(4 * quarters))

    def add(self, service: str, level: int, ts: datetime, message: str) -> None:
        quarter = (ts - self.start) // QUARTER
        held: set[bytes] = set()
        for token in tokens(message):
            inside = self.inside.get(token)
            if inside is not None:
                held.update(inside)
            elif token in self.rare_words:
                continue
            elif token.isalpha() and len(self.rare_words) < MAX_RARE_WORDS:
                self.rare_words.add(token)
            else:
                add_grams(token, self.rare_grams)
        for word in held:
            cells = self.cells[word]
            cell = cells.get((service, level))
            if cell is None:
                cell = cells[(service, level)] = [0, ts, ts, self.no_quarters[:]]
            cell[0] += 1
            if ts < cell[1]:
                cell[1] = ts
            elif ts > cell[2]:
                cell[2] = ts
            cell[3][quarter] += 1


def _words_inside(words: frozenset[bytes]) -> dict[bytes, tuple[bytes, ...]]:
    """Each word and the words that are pieces of it, itself included. Pieces are
    looked up only at the lengths words have: a long token taken for a word costs its
    length times theirs, not its length squared."""
    lengths = sorted({len(w) for w in words})
    inside: dict[bytes, tuple[bytes, ...]] = {}
    for word in words:
        found = {word}
        for length in lengths:
            if length >= len(word):
                break
            found.update(
                piece
                for i in range(len(word) - length + 1)
                if (piece := word[i : i + length]) in words
            )
        inside[word] = tuple(found)
    return inside
