"""Word counts of past hours (shared/word_counts.py): a word's count over closed days and
today's past hours comes from them, exactly as from the rows, per tenant; a late entry
or a deletion is never missed."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg_pool import AsyncConnectionPool

from services.janitor import metrics
from services.janitor.removal import delete_tenant_day
from services.janitor.word_counts import RECOUNT_AFTER, count_words
from shared.compaction import compact
from shared.db import tenant_scope
from shared.filters import LogFilter, compile_filter
from shared.rollups import ceil_to
from shared.settings import Settings
from shared.word_counts import (
    GRAM_BYTES,
    QUARTER,
    add_grams,
    counted_term,
    term_bits,
    tokens,
    word_rows,
)
from tests.conftest import OTHER_TENANT, TENANT, tenant_headers
from tests.test_kept_hours import FRESH, kept_keys, stats
from tests.test_loki_query import loki, matrix, ns
from tests.test_stats import (
    Dataset,
    check_stats,
    ingest_dataset,
    iso,
    query_dict,
    reference_buckets,
)

Series = dict[tuple[tuple[str, str], ...], dict[datetime, float]]

# The dataset has ~100 entries per template word: a low bar makes words of them.
MIN_ROWS = 20
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12),
       st.data())  # fmt: skip
def test_a_token_holding_a_term_has_every_bit_of_the_term(token: str, data: Any) -> None:
    i = data.draw(st.integers(0, len(token) - 1))
    j = data.draw(st.integers(i + 1, len(token)))
    bitmap = bytearray(GRAM_BYTES)
    add_grams(token.encode(), bitmap)
    for bit in term_bits(token[i:j]):
        assert bitmap[bit >> 3] & (1 << (bit & 7))


def test_tokens_are_runs_of_ascii_letters_and_digits_with_ascii_case_folded() -> None:
    assert tokens("Payment 3F2a EXPIRED: user_id=Ünïcode, expired!") == {
        b"payment", b"3f2a", b"expired", b"user", b"id", b"n", b"code"
    }  # fmt: skip


def test_only_one_word_of_letters_and_digits_is_counted_from_words() -> None:
    def term(**kw: Any) -> str | None:
        f = compile_filter(LogFilter(**kw))
        return counted_term(f, ("service_name", "level"), None)

    assert term(search="Expired") == "expired"
    assert term(search="expired payment") is None  # two terms
    assert term(search='"expired payment"') is None  # a phrase
    assert term(search="user_id") is None
    assert term(search="expired", host="h") is None
    assert term(search="expired", min_level="WARN", service_name="api") == "expired"
    f = compile_filter(LogFilter(search="expired"))
    assert counted_term(f, ("environment",), None) is None
    assert counted_term(f, ("level",), DAY) == "expired"  # a histogram of days
    assert counted_term(f, ("level",), HOUR * 6) == "expired"  # or of hours
    assert counted_term(f, ("level",), timedelta(minutes=30)) == "expired"  # quarter hours
    assert counted_term(f, ("level",), timedelta(minutes=5)) is None


def counted(conninfo: str, now: datetime | None = None) -> int:
    """The janitor's word counting as of `now`, the rollups compacted first."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        compact(conn)
        return count_words(conn, now=now, min_rows=MIN_ROWS)


def spans_counted(kind: str) -> float:
    value = metrics.REGISTRY.get_sample_value("minisource_janitor_word_spans_total", {"span": kind})
    assert value is not None
    return value


def midnight(ts: datetime) -> datetime:
    return ts.replace(hour=0, minute=0, second=0, microsecond=0)


def window(data: Dataset, **terms: Any) -> LogFilter:
    """The dataset's day (or two), and an hour or so on each side counted from rows."""
    start = midnight(data.start) - HOUR
    end = midnight(data.end) + DAY + HOUR * 1.5
    return LogFilter(start_time=iso(start), end_time=iso(end), **terms)


async def served_spans(
    pool: AsyncConnectionPool, tenant: uuid.UUID, f: LogFilter
) -> list[tuple[datetime, datetime]]:
    """The spans of the window the word counts answer for `f`."""
    compiled = compile_filter(f)
    term = counted_term(compiled, ("service_name", "level"), None)
    assert term is not None and compiled.start is not None and compiled.end is not None
    first, last = compiled.start + HOUR, compiled.end - HOUR * 1.5
    async with tenant_scope(pool, tenant) as conn:
        _, served = await word_rows(
            conn, tenant, compiled, term, ("service_name", "level"), first, last
        )
    return sorted(served)


async def served_days(pool: AsyncConnectionPool, tenant: uuid.UUID, f: LogFilter) -> int:
    return len(await served_dates(pool, tenant, f))


async def served_dates(pool: AsyncConnectionPool, tenant: uuid.UUID, f: LogFilter) -> set[date]:
    spans = await served_spans(pool, tenant, f)
    assert all(until - start == DAY for start, until in spans)
    return {start.date() for start, _ in spans}


def answering_days(data: Dataset, term: str, min_rows: int = MIN_ROWS) -> set[date]:
    """The dataset's days whose word counts answer for `term`: on which every token of
    TENANT's messages holding the term is held by at least `min_rows` of them (a word),
    and one of those words is inside all the others. Which days those are depends on
    the clock: ingest_dataset ends its range on the hour, so just past midnight a day
    holds seconds or an hour of the entries, and a word common over three hours may be
    rare in one."""
    per_day: dict[date, Counter[bytes]] = {}
    for e in data.entries[TENANT]:
        per_day.setdefault(e["timestamp"].date(), Counter()).update(tokens(e["message"]))
    needle = term.lower().encode()
    answering = set()
    for day, seen in per_day.items():
        holding = {token: n for token, n in seen.items() if needle in token}
        inner = min(holding, key=len, default=b"")
        if all(n >= min_rows and inner in token for token, n in holding.items()):
            answering.add(day)
    return answering


# Words of the dataset's templates in more than MIN_ROWS entries each, a piece of one,
# and a term in no message: answered from the word counts. "e" is in many words, and
# "payment" in "payments" too, a rarer one.
COMMON = ["expired", "session", "failed", "xpire", "EXPIRED", "zzzqqq"]


def terms_of(data: Dataset) -> list[str]:
    """Words of the dataset's messages, most of them rare, COMMON, "e" and "payment"."""
    found = sorted({w for e in data.entries[TENANT] for w in e["message"].split() if w.isalpha()})
    return [*found[::7], *COMMON, "e", "payment"]


async def test_a_word_is_counted_from_closed_days_exactly(client, writer, settings, pool) -> None:
    data = await ingest_dataset(client, writer, per_tenant=800)
    days = {data.start.date(), data.end.date()}
    assert counted(settings.postgres_conninfo()) == 2 * len(days)  # two tenants
    for term in terms_of(data):
        for tenant in (TENANT, OTHER_TENANT):
            f = window(data, search=term)
            check_stats(await stats(client, f, tenant), data.expected(tenant, f))
            narrowed = window(data, search=term, min_level="WARN", service_name="api")
            check_stats(await stats(client, narrowed, tenant), data.expected(tenant, narrowed))
    assert answering_days(data, "session")
    for term in COMMON:
        served = await served_dates(pool, TENANT, window(data, search=term))
        assert answering_days(data, term) <= served, term
    for term in ("e", "payment"):  # in many words; in a word and a rarer one
        served = await served_dates(pool, TENANT, window(data, search=term))
        assert served <= answering_days(data, term), term


async def buckets(
    client, f: LogFilter, interval: str, group_by: str | None = None
) -> dict[tuple[Any, ...], dict[str, int]]:
    """POST /aggregate's non-empty buckets, keyed as reference_buckets keys them."""
    response = await client.post(
        "/api/v1/logs/aggregate",
        json={**query_dict(f), "interval": interval, "group_by": group_by},
        headers={**tenant_headers(), **FRESH},
    )
    assert response.status_code == 200, response.text
    return {
        (datetime.fromisoformat(b["time"]), *([b["service_name"]] if group_by else [])): b[
            "by_level"
        ]
        for b in response.json()["buckets"]
        if b["count"]
    }


def kept_dates(settings: Settings, before: set[bytes]) -> set[date]:
    """The days of the hours kept (shared/kept_hours.py) since `before`: hours counted
    from rows."""
    return {
        datetime.fromtimestamp(int(key.rsplit(b":", 1)[1]), UTC).date()
        for key in set(kept_keys(settings, TENANT)) - before
    }


@pytest.mark.parametrize(
    ("interval", "step", "group_by", "terms"),
    [
        ("15m", QUARTER, "service", {}),
        ("1h", HOUR, None, {}),
        ("6h", HOUR * 6, "service", {"min_level": "WARN"}),
        ("1d", DAY, "service", {"services": ["api", "payment"]}),
    ],
)
async def test_a_words_histogram_by_hours_is_counted_from_closed_days_exactly(
    client, writer, settings, interval, step, group_by, terms
) -> None:
    data = await ingest_dataset(client, writer, per_tenant=800)
    counted(settings.postgres_conninfo())
    for term in COMMON:
        before = set(kept_keys(settings, TENANT))
        f = window(data, search=term, **terms)
        expected = reference_buckets(data.expected(TENANT, f), step, by_service=bool(group_by))
        assert await buckets(client, f, interval, group_by) == expected, term
        # The hours counted from rows are kept: none of a day the word counts answer for.
        assert not kept_dates(settings, before) & answering_days(data, term), term


async def test_a_window_cutting_a_day_is_counted_from_the_days_hours(
    client, writer, settings
) -> None:
    data = await ingest_dataset(client, writer, per_tenant=800)
    counted(settings.postgres_conninfo())
    # From 20 minutes into the range, whatever the clock: its first day is cut.
    start, end = data.start + timedelta(minutes=20), data.end + HOUR
    for term in COMMON:
        f = LogFilter(start_time=iso(start), end_time=iso(end), search=term)
        before = set(kept_keys(settings, TENANT))
        check_stats(await stats(client, f), data.expected(TENANT, f))
        for interval, step in (("1h", HOUR), ("15m", QUARTER)):
            expected = reference_buckets(data.expected(TENANT, f), step, by_service=False)
            assert await buckets(client, f, interval) == expected, (term, interval)
        assert not kept_dates(settings, before) & answering_days(data, term), term


async def test_a_words_count_over_time_in_loki_is_counted_from_its_word_counts(
    client, writer, settings
) -> None:
    data = await ingest_dataset(client, writer, per_tenant=800)
    conninfo = settings.postgres_conninfo()
    counted(conninfo)
    # Hourly buckets cutting the first day at 20 minutes past the range's start.
    start = data.start + timedelta(minutes=20)
    first, end = ceil_to(start, HOUR), data.end + HOUR * 2

    async def per_level(selector: str, spacing: str = " ") -> Series:
        query = f"sum by (level){spacing}(count_over_time({selector} [1h]))"
        return matrix(
            await loki(
                client, "/query_range", query=query, start=ns(first), end=ns(end), step="3600"
            )
        )

    expected: dict[str, Series] = {}
    for term in COMMON:
        before = set(kept_keys(settings, TENANT))
        selector = f'{{service_name=~".+"}} |= "{term}"'
        f = LogFilter(start_time=iso(first - HOUR), end_time=iso(end), search=term)
        want = expected[term] = {}
        for (bucket,), levels in reference_buckets(
            data.expected(TENANT, f), HOUR, by_service=False
        ).items():
            for level, n in levels.items():
                if n:
                    want.setdefault((("level", level.lower()),), {})[bucket + HOUR] = n
        assert await per_level(selector) == want, term
        assert not kept_dates(settings, before) & answering_days(data, term), term
        # An instant query over the same hours: their sum, one sample (none for no entry).
        hours = int((end - first) / HOUR) + 1
        instant = await loki(
            client, "/query", query=f"sum(count_over_time({selector} [{hours}h]))", time=ns(end)
        )
        total = int(sum(n for points in want.values() for n in points.values()))
        samples = [r["value"][1] for r in instant["data"]["result"]]
        assert samples == ([str(total)] if total else []), term
    # Those answers are the word counts': doubled there, they double on the days the
    # counts answer for (asked in other words, past the answer cache).
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "UPDATE log_word_counts SET quarter_counts = array(SELECT 2 * n"
            " FROM unnest(quarter_counts) AS n) WHERE tenant_id = %s",
            (TENANT,),
        )
    days = answering_days(data, "session")
    doubled = {
        labels: {t: n * 2 if (t - HOUR).date() in days else n for t, n in points.items()}
        for labels, points in expected["session"].items()
    }
    assert await per_level('{service_name=~".+"} |= "session"', spacing="") == doubled


async def test_a_late_entry_or_a_deletion_is_counted(client, writer, settings, pool) -> None:
    data = await ingest_dataset(client, writer, per_tenant=800)
    conninfo = settings.postgres_conninfo()
    counted(conninfo)
    busy = answering_days(data, "session")
    assert busy
    f = window(data, search="session")
    before = await stats(client, f)
    check_stats(before, data.expected(TENANT, f))
    assert busy <= await served_dates(pool, TENANT, f)
    late = {
        "service_name": "late-service",
        "level": "ERROR",
        "message": "session refused, arriving late",
        "timestamp": iso(data.start + timedelta(minutes=7)),
    }
    response = await client.post(
        "/api/v1/logs/batch", json={"entries": [late]}, headers=tenant_headers()
    )
    assert response.status_code == 202, response.text
    await writer.drain()
    # The day's counts no longer hold: counted from rows until the janitor's next run.
    assert data.start.date() not in await served_dates(pool, TENANT, f)
    after = await stats(client, f)
    assert after["total_count"] == before["total_count"] + 1
    assert counted(conninfo) == 0  # counted too recently
    assert counted(conninfo, now=datetime.now(UTC) + RECOUNT_AFTER) == 1
    assert busy <= await served_dates(pool, TENANT, f)
    assert await stats(client, f) == after
    # The tenant's days removed (retention): their counts go with the next run.
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for d in {midnight(data.start), midnight(data.end)}:
            delete_tenant_day(conn, TENANT, d.date(), batch=1000)
        counted(conninfo)
        left = conn.execute(
            "SELECT (SELECT count(*) FROM log_word_spans WHERE tenant_id = %s), "
            "(SELECT count(*) FROM log_word_counts WHERE tenant_id = %s)",
            (TENANT, TENANT),
        ).fetchone()
    assert left == (0, 0)
    assert (await stats(client, f))["total_count"] == 0
    check_stats(await stats(client, f, OTHER_TENANT), data.expected(OTHER_TENANT, f))


async def test_a_day_not_closed_is_counted_by_the_hour_then_replaced_by_the_day(
    client, writer, settings, pool
) -> None:
    data = await ingest_dataset(client, writer, per_tenant=800)
    conninfo = settings.postgres_conninfo()
    day = midnight(data.end)
    hours_before = spans_counted("hour")
    # As the janitor sees it late that day: the day is not closed, its hours to 23:00 are.
    assert counted(conninfo, now=day + HOUR * 23.5) >= 2
    assert spans_counted("hour") >= hours_before + 2
    f = window(data, search="session")
    spans = await served_spans(pool, TENANT, f)
    assert [s for s in spans if s[0] >= day]
    assert all(until - start == HOUR for start, until in spans if start >= day)
    for term in COMMON:
        for tenant in (TENANT, OTHER_TENANT):
            f = window(data, search=term)
            check_stats(await stats(client, f, tenant), data.expected(tenant, f))
        expected = reference_buckets(data.expected(TENANT, f), HOUR, by_service=True)
        assert await buckets(client, f, "1h", "service") == expected, term
        expected = reference_buckets(data.expected(TENANT, f), QUARTER, by_service=False)
        assert await buckets(client, f, "15m") == expected, term
    # The day closed: its count replaces its hours'.
    counted(conninfo)
    assert await served_days(pool, TENANT, f) == len({data.start.date(), data.end.date()})
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT count(*) FROM log_word_spans WHERE until - start <> interval '1 day'"
        ).fetchone()
    assert row == (0,)
    for term in COMMON:
        f = window(data, search=term, min_level="WARN")
        check_stats(await stats(client, f), data.expected(TENANT, f))


@pytest.mark.parametrize("min_rows", [1, 10**9])
async def test_counts_are_exact_whatever_is_taken_for_a_word(
    client, writer, settings, pool, min_rows
) -> None:
    """Every token a word (ids too), or none: each term is counted from the words, from
    rows, or (a term in no token at all) as none, and the answers do not change."""
    data = await ingest_dataset(client, writer, per_tenant=400)
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        compact(conn)
        assert count_words(conn, min_rows=min_rows) >= 2
    for term in terms_of(data):
        f = window(data, search=term)
        check_stats(await stats(client, f), data.expected(TENANT, f))
    if min_rows == 1:
        # Every token a word: a term inside several words is answered from the one they
        # all contain ("to": "to", "token", "took", "topic"), and exactly, as above.
        inside_others = [
            t for t in ("to", "in", "12", "25")
            if len({tok for e in data.entries[TENANT] for tok in tokens(e["message"])
                    if t.encode() in tok}) > 1
        ]  # fmt: skip
        assert inside_others
        for term in inside_others:
            served = await served_dates(pool, TENANT, window(data, search=term))
            assert served == answering_days(data, term, min_rows) != set(), term
