"""Counting the words of closed days (shared/closed_day_words.py says what for).

Each janitor run counts the tenant-days that need it, oldest first, for up to
COUNT_SECONDS: a closed day (LATE_ENTRY_GRACE after its end) whose rollup cells are
compacted (log_counts_daily holds it) and that has no counts yet, or whose count of
entries in the rollups has changed since (a late entry, a deletion). Counts of a
tenant-day with no entries left (retention removed it) are removed.

A tenant-day is counted in one REPEATABLE READ transaction, so the rows read and the
rollups' count of them are of one moment; cut short (SIGTERM cancels the statement,
services/janitor/__main__.py), it leaves nothing. Its rows are read twice, in batches
through a server-side cursor, so memory does not grow with the day: once to find which
tokens are words (their entries counted with a bounded table), once to count the words
per service and level and to note the other tokens.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from services.janitor.closed_partitions import LATE_ENTRY_GRACE
from shared.closed_day_words import GRAM_BYTES, WORD_MIN_ROWS, add_grams, tokens

log = logging.getLogger("janitor")

# A run stops starting tenant-days after this long; the next run goes on.
COUNT_SECONDS = 120
# At most this many words per tenant-day, the most frequent (bounds the cells held and
# stored); the others are noted as other tokens.
MAX_WORDS = 2000
# Other tokens of letters only kept as a list up to this many, then as pieces.
MAX_RARE_WORDS = 20_000
# The first pass's table of tokens: when it grows past this, the tokens seen least are
# dropped (a word missed that way is only noted as another token: still exact).
MAX_TALLY = 400_000
_BATCH = 10_000

_TODO_SQL = """
SELECT c.tenant_id, c.day, sum(c.count) AS rows
FROM log_counts_daily c
WHERE c.day + interval '1 day' <= least(%s, (SELECT compacted_until FROM rollup_watermark))
GROUP BY c.tenant_id, c.day
HAVING sum(c.count) > 0 AND sum(c.count) IS DISTINCT FROM
       (SELECT d.rows FROM log_word_days d WHERE d.tenant_id = c.tenant_id AND d.day = c.day)
ORDER BY c.day, c.tenant_id
LIMIT 1
"""

_DAY_ROWS_SQL = """
SELECT coalesce(sum(count), 0) FROM log_counts_daily WHERE tenant_id = %s AND day = %s
"""

# Counts of tenant-days whose entries are all gone.
_GONE_SQL = """
WITH gone AS (
    DELETE FROM log_word_days d
    WHERE NOT EXISTS (SELECT 1 FROM log_counts_daily c
                      WHERE c.tenant_id = d.tenant_id AND c.day = d.day AND c.count > 0)
    RETURNING d.tenant_id, d.day, d.words
)
DELETE FROM log_word_counts w USING gone g, unnest(g.words) AS x(word)
WHERE w.tenant_id = g.tenant_id AND w.word = x.word AND w.day = g.day
"""

_FORMER_SQL = """
WITH former AS (
    DELETE FROM log_word_days WHERE tenant_id = %(tenant)s AND day = %(day)s RETURNING words
)
DELETE FROM log_word_counts w USING former f, unnest(f.words) AS x(word)
WHERE w.tenant_id = %(tenant)s AND w.word = x.word AND w.day = %(day)s
"""

_MESSAGES_SQL = """
SELECT message FROM log_entries
WHERE tenant_id = %s AND "timestamp" >= %s AND "timestamp" < %s
"""

_ENTRIES_SQL = """
SELECT service_name, level, "timestamp", message FROM log_entries
WHERE tenant_id = %s AND "timestamp" >= %s AND "timestamp" < %s
"""

_INSERT_DAY_SQL = """
INSERT INTO log_word_days (tenant_id, day, rows, words, rare_words, rare_grams)
VALUES (%s, %s, %s, %s, %s, %s)
"""

_COPY_CELLS_SQL = """
COPY log_word_counts (tenant_id, word, day, services, levels, counts, firsts, lasts)
FROM STDIN
"""


def count_closed_day_words(
    conn: psycopg.Connection,
    *,
    before: datetime | None = None,
    seconds: float = COUNT_SECONDS,
    keep_going: Callable[[], bool] = lambda: True,
    min_rows: int = WORD_MIN_ROWS,
) -> int:
    """Count the tenant-days that need it (closed before `before`, default: now minus
    LATE_ENTRY_GRACE), for up to `seconds` and while `keep_going()`; returns how many
    were counted. `min_rows`: see WORD_MIN_ROWS. `conn` must be in autocommit mode."""
    if before is None:
        before = datetime.now(UTC) - LATE_ENTRY_GRACE
    gone = conn.execute(_GONE_SQL).rowcount
    if gone:
        log.info("removed %d word counts of days with no entries left", gone)
    deadline = time.monotonic() + seconds
    counted = 0
    while time.monotonic() < deadline and keep_going():
        row = conn.execute(_TODO_SQL, (before,)).fetchone()
        if row is None:
            break
        tenant_id, day = row[0], row[1]
        started = time.monotonic()
        words = count_tenant_day(conn, tenant_id, day, min_rows)
        log.info("counted %d words of tenant %s on %s in %.1f s",
                 words, tenant_id, day.date(), time.monotonic() - started)  # fmt: skip
        counted += 1
    return counted


def count_tenant_day(
    conn: psycopg.Connection, tenant_id: uuid.UUID, day: datetime, min_rows: int = WORD_MIN_ROWS
) -> int:
    """Replace the tenant-day's word counts by new ones; returns how many words it has."""
    span = (tenant_id, day, day + timedelta(days=1))
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        fetched = conn.execute(_DAY_ROWS_SQL, (tenant_id, day)).fetchone()
        rows = int(fetched[0]) if fetched else 0
        words = _frequent_tokens(_column(conn, _MESSAGES_SQL, span, "word_tally"), min_rows)
        tally = _Tally(words)
        for service, level, ts, message in _rows(conn, _ENTRIES_SQL, span, "word_cells"):
            tally.add(service, level, ts, message)
        counted = {word.decode(): cells for word, cells in tally.cells.items() if cells}
        conn.execute(_FORMER_SQL, {"tenant": tenant_id, "day": day})
        conn.execute(
            _INSERT_DAY_SQL,
            (tenant_id, day, rows, sorted(counted),
             sorted(w.decode() for w in tally.rare_words), bytes(tally.rare_grams)),
        )  # fmt: skip
        with conn.cursor().copy(_COPY_CELLS_SQL) as copy:
            for word, cells in counted.items():
                # One array per column: services, levels, counts, firsts, lasts.
                columns = zip(*((*key, *value) for key, value in cells.items()), strict=True)
                copy.write_row((tenant_id, word, day, *map(list, columns)))
    return len(counted)


def _rows(
    conn: psycopg.Connection, query: str, params: tuple[Any, ...], name: str
) -> Iterator[tuple[Any, ...]]:
    with conn.cursor(name=name) as cur:
        cur.itersize = _BATCH
        cur.execute(query, params)
        yield from cur


def _column(
    conn: psycopg.Connection, query: str, params: tuple[Any, ...], name: str
) -> Iterator[Any]:
    for row in _rows(conn, query, params, name):
        yield row[0]


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


class _Tally:
    """The second pass: cells of the words, the other tokens noted."""

    def __init__(self, words: frozenset[bytes]) -> None:
        self.words = words
        # word -> (service, level) -> [entries, first, last]
        self.cells: dict[bytes, dict[tuple[str, int], list[Any]]] = {w: {} for w in words}
        self.rare_words: set[bytes] = set()
        self.rare_grams = bytearray(GRAM_BYTES)

    def add(self, service: str, level: int, ts: datetime, message: str) -> None:
        for token in tokens(message):
            cells = self.cells.get(token)
            if cells is not None:
                cell = cells.get((service, level))
                if cell is None:
                    cells[(service, level)] = [1, ts, ts]
                else:
                    cell[0] += 1
                    if ts < cell[1]:
                        cell[1] = ts
                    elif ts > cell[2]:
                        cell[2] = ts
            elif token in self.rare_words:
                continue
            elif token.isalpha() and len(self.rare_words) < MAX_RARE_WORDS:
                self.rare_words.add(token)
            else:
                add_grams(token, self.rare_grams)
