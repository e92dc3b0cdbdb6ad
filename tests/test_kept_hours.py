"""Raw counts keep their whole past hours (shared/kept_hours.py): asked again, the same
question is answered from the kept hours, exactly, per tenant; a late entry or a dead
Redis never makes an answer wrong."""

from __future__ import annotations

import socket
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from redis import Redis as SyncRedis

from shared import rollups
from shared.compaction import compact
from shared.db import make_pool, tenant_scope
from shared.filters import LogFilter, compile_filter
from shared.kept_hours import KeptHours
from shared.redis_conn import make_redis
from shared.redis_keys import RedisKeys
from shared.settings import Settings
from tests.conftest import OTHER_TENANT, TENANT, tenant_headers
from tests.test_stats import (
    RAW_HOST,
    Dataset,
    check_stats,
    ingest_dataset,
    iso,
    query_dict,
    query_params,
    reference_buckets,
)

FRESH = {"Cache-Control": "no-cache"}  # past the answer cache: PostgreSQL or kept hours


def kept_keys(settings: Settings, tenant: uuid.UUID) -> list[bytes]:
    with SyncRedis(host=settings.redis_host, port=settings.redis_port) as redis:
        return list(redis.scan_iter(match=f"{settings.redis_key_prefix}:hours:{tenant}:*"))


def wide(data: Dataset, **terms: Any) -> LogFilter:
    """The dataset's 3 hours and one on each side: four whole past hours and two edges."""
    start, end = data.start - timedelta(hours=1), data.end + timedelta(hours=1)
    return LogFilter(start_time=iso(start), end_time=iso(end), **terms)


async def stats(client, f: LogFilter, tenant: uuid.UUID = TENANT) -> dict[str, Any]:
    response = await client.get(
        "/api/v1/logs/stats", params=query_params(f), headers={**tenant_headers(tenant), **FRESH}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize("terms", [{"search": "failed"}, {"host": RAW_HOST, "min_level": "WARN"}])
async def test_a_raw_count_asked_again_is_answered_from_kept_hours(
    client, writer, settings, terms
) -> None:
    data = await ingest_dataset(client, writer, per_tenant=800)
    f = wide(data, **terms)
    first = await stats(client, f)
    check_stats(first, data.expected(TENANT, f))
    assert first["source"] == "raw" and first["total_count"] > 0
    # Four whole past hours; the first holds no entry of the tenant, so nothing is kept
    # for it (nothing to count); the last holds a few seconds of entries, or none.
    assert 3 <= len(kept_keys(settings, TENANT)) <= 4
    again = await stats(client, f)
    assert again == first
    # Another tenant asking the same question counts its own rows and keeps its own hours.
    if "search" in terms:
        other = await stats(client, f, OTHER_TENANT)
        check_stats(other, data.expected(OTHER_TENANT, f))
        assert 3 <= len(kept_keys(settings, OTHER_TENANT)) <= 4


@pytest.mark.parametrize(
    ("interval", "step", "group_by"),
    [
        ("1m", timedelta(minutes=1), None),
        ("15m", timedelta(minutes=15), "service"),
        ("1h", timedelta(hours=1), None),
        ("6h", timedelta(hours=6), "service"),
    ],
)
async def test_aggregate_buckets_from_kept_hours_match_a_python_histogram(
    client, writer, interval, step, group_by
) -> None:
    data = await ingest_dataset(client, writer, per_tenant=800)
    f = wide(data, search="e")
    expected = reference_buckets(data.expected(TENANT, f), step, by_service=bool(group_by))
    answers = []
    for _ in range(2):  # counted, then kept
        response = await client.post(
            "/api/v1/logs/aggregate",
            json={**query_dict(f), "interval": interval, "group_by": group_by},
            headers={**tenant_headers(), **FRESH},
        )
        assert response.status_code == 200, response.text
        buckets = response.json()["buckets"]
        got = {
            (datetime.fromisoformat(b["time"]), *([b["service_name"]] if group_by else [])): b[
                "by_level"
            ]
            for b in buckets
            if b["count"]
        }
        assert got == expected
        answers.append(buckets)
    assert answers[0] == answers[1]


async def test_a_late_entry_in_a_kept_hour_is_counted(client, writer, settings) -> None:
    """Over days: whole days compacted into one rollup cell each, and the day of the data
    among them, so that an hour's fingerprint is its day's count; a late entry in one
    hour changes it, and the count has the entry."""
    data = await ingest_dataset(client, writer, per_tenant=600)
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        compact(conn)
    start, end = data.start - timedelta(days=2), data.end + timedelta(days=1)
    f = LogFilter(start_time=iso(start), end_time=iso(end), search="failed")
    before = await stats(client, f)
    check_stats(before, data.expected(TENANT, f))
    assert kept_keys(settings, TENANT)
    assert await stats(client, f) == before
    late = {
        "service_name": "late-service",
        "level": "ERROR",
        "message": "payment failed, arriving late",
        "timestamp": iso(data.start + timedelta(hours=1, minutes=7)),
    }
    response = await client.post(
        "/api/v1/logs/batch", json={"entries": [late]}, headers=tenant_headers()
    )
    assert response.status_code == 202, response.text
    await writer.drain()
    after = await stats(client, f)
    assert after["total_count"] == before["total_count"] + 1
    assert after["by_service"]["late-service"] == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_counts_are_exact_whatever_redis_does(client, writer, settings) -> None:
    """Kept hours in a Redis that is not there, and kept hours corrupted by hand: the
    counts are those without any kept hour."""
    data = await ingest_dataset(client, writer, per_tenant=500)
    f = compile_filter(wide(data, search="failed"), datetime.now(UTC))
    dims = ("service_name", "level")
    dead = KeptHours(
        make_redis(replace(settings, redis_port=_closed_port()), timeout=0.2),
        RedisKeys.from_settings(settings),
        ttl=60,
        timeout=0.2,
    )
    live = KeptHours.from_settings(settings)
    pool = make_pool(settings, name="kept-hours-test")
    await pool.open()
    try:
        async with tenant_scope(pool, TENANT) as conn:
            truth, _ = await rollups.count_groups(conn, TENANT, f, dims)
            for kept in (dead, live):
                got, _ = await rollups.count_groups(conn, TENANT, f, dims, kept)
                assert sorted(got, key=str) == sorted(truth, key=str)
            assert not dead.enabled  # gave up on Redis for a while, answered raw
        with SyncRedis(host=settings.redis_host, port=settings.redis_port) as redis:
            for key in kept_keys(settings, TENANT):
                redis.set(key, b"not msgpack of ours")
        async with tenant_scope(pool, TENANT) as conn:
            got, _ = await rollups.count_groups(conn, TENANT, f, dims, live)
            assert sorted(got, key=str) == sorted(truth, key=str)
    finally:
        await pool.close()
        await dead.aclose()
        await live.aclose()


async def test_a_raw_count_gives_the_transaction_its_planner_costs_back(settings) -> None:
    """The raw count makes parallel workers free for its one statement, or, over as few
    rows as this test's, plans it without any (shared/rollups.py, `raw_rows`); the rest
    of the transaction plans with the settings it had."""
    now = datetime.now(UTC)
    day = LogFilter(search="failed", start_time=iso(now - timedelta(days=1)), end_time=iso(now))
    kept = KeptHours.from_settings(settings)
    pool = make_pool(settings, name="kept-hours-costs")
    await pool.open()
    try:
        async with tenant_scope(pool, TENANT) as conn:
            await conn.execute("SET LOCAL parallel_setup_cost = 123")
            await conn.execute("SET LOCAL parallel_tuple_cost = 0.5")
            await conn.execute("SET LOCAL max_parallel_workers_per_gather = 3")
            _, from_rollups = await rollups.count_groups(
                conn, TENANT, compile_filter(day, now), ("service_name", "level"), kept
            )
            costs = [
                (await (await conn.execute(f"SHOW {name}")).fetchone() or ("",))[0]
                for name in (
                    "parallel_setup_cost",
                    "parallel_tuple_cost",
                    "max_parallel_workers_per_gather",
                )
            ]
        assert not from_rollups  # a search: counted raw
        assert costs == ["123", "0.5", "3"]
    finally:
        await pool.close()
        await kept.aclose()


# Characters a SQL literal must escape or LIKE treats as its own: a raw count over whole
# past hours binds its parameters on this side (shared/rollups.py, _fetch_with_settings).
_AWKWARD_MESSAGES = [
    "it's done",
    "100% of C:\\temp\\_x",
    'said "no" then DROP TABLE log_entries; --',
    "naïve café",
]


@pytest.mark.parametrize(
    ("search", "matches_per_hour"),
    [
        ("it's", 1),
        ("100%", 1),
        ("C:\\temp\\_x", 1),
        ("%", 1),  # as a LIKE wildcard: 4
        ("_", 2),  # "\\_x" and "log_entries"; as a LIKE wildcard it would be 4
        ("\\", 1),
        ('"said \\"no\\""', 0),  # a phrase of its own, unlike the message's
        ("'; --", 0),
        ("café", 1),
        ("x'); DELETE FROM log_entries; --", 0),
    ],
)
async def test_awkward_search_terms_count_exactly_over_kept_hours(
    client, writer, search, matches_per_hour
) -> None:
    # Four whole past hours two days back, each holding every message once: counted
    # from rows through raw_rows, then asked again and answered from the kept hours.
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=2)
    entries = [
        {"service_name": "svc", "level": "INFO", "message": message,
         "timestamp": iso(start + timedelta(hours=hour, minutes=7 * i + 1))}
        for hour in range(4)
        for i, message in enumerate(_AWKWARD_MESSAGES)
    ]  # fmt: skip
    response = await client.post(
        "/api/v1/logs/batch", json={"entries": entries}, headers=tenant_headers()
    )
    assert response.status_code == 202, response.text
    await writer.drain()
    window = {"start_time": iso(start), "end_time": iso(start + timedelta(hours=4))}
    for _ in range(2):  # counted, then kept
        body = await stats(client, LogFilter(search=search, **window))
        assert body["source"] == "raw"
        assert body["total_count"] == 4 * matches_per_hour
    everything = await stats(client, LogFilter(**window))
    assert everything["total_count"] == 4 * len(_AWKWARD_MESSAGES)  # nothing was run
