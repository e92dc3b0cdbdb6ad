"""The query cache: repeats of a closed-range query come from Redis, open ranges only
briefly, answers never cross tenants, and a dead or hung Redis only costs the cache."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from litestar.testing import AsyncTestClient
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from services.gateway.app import create_app
from services.gateway.query.cache import Answer, CacheStatus, QueryCache
from shared.filters import LogFilter
from shared.redis_keys import RedisKeys
from shared.settings import Settings
from tests.conftest import OTHER_TENANT, TENANT, tenant_headers
from tests.polling import wait_until
from tests.private_services import private_redis
from tests.processes import free_port
from tests.test_stats import check_stats, ingest_dataset, iso, query_params


def cache_keys(settings: Settings, tenant: uuid.UUID, kind: str = "*") -> dict[str, int]:
    """The tenant's cache keys and their remaining TTL in seconds."""
    client = SyncRedis(host=settings.redis_host, port=settings.redis_port, db=settings.redis_db)
    with contextlib.closing(client):
        pattern = f"{settings.redis_key_prefix}:qcache:{tenant}:{kind}:*"
        return {key.decode(): int(client.ttl(key)) for key in client.scan_iter(match=pattern)}


async def stats(client, f: LogFilter, tenant: uuid.UUID = TENANT, **headers: str):
    return await client.get(
        "/api/v1/logs/stats",
        params=query_params(f),
        headers={**tenant_headers(tenant), **headers},
    )


async def test_second_identical_closed_range_query_is_served_from_redis(
    client, writer, settings
) -> None:
    data = await ingest_dataset(client, writer, per_tenant=300)
    f = LogFilter(start_time=iso(data.start), end_time=iso(data.end))
    first = await stats(client, f)
    assert first.headers["x-cache"] == "miss"
    second = await stats(client, f)
    assert second.headers["x-cache"] == "hit"
    assert second.content == first.content
    # The same range written another way (offset instead of Z) is the same query.
    plus_two = timezone(timedelta(hours=2))
    shifted = LogFilter(
        start_time=data.start.astimezone(plus_two).isoformat(), end_time=iso(data.end)
    )
    assert (await stats(client, shifted)).headers["x-cache"] == "hit"
    keys = cache_keys(settings, TENANT, "stats")
    assert len(keys) == 1
    assert settings.query_cache_ttl_seconds - 60 < next(iter(keys.values()))


async def test_open_range_is_cached_for_seconds_only(client, writer, settings) -> None:
    await ingest_dataset(client, writer, per_tenant=100)
    f = LogFilter(start_time="now-3d")
    assert (await stats(client, f)).headers["x-cache"] == "miss"
    assert (await stats(client, f)).headers["x-cache"] == "hit"
    (ttl,) = cache_keys(settings, TENANT, "stats").values()
    assert 0 < ttl <= settings.query_cache_open_ttl_seconds


async def test_cached_answers_are_per_tenant(client, writer, settings) -> None:
    data = await ingest_dataset(client, writer, per_tenant=200)
    extra = [
        {"service_name": "x", "level": "INFO", "message": "more", "timestamp": iso(data.start)}
    ]
    response = await client.post(
        "/api/v1/logs/batch", json={"entries": extra * 5}, headers=tenant_headers(OTHER_TENANT)
    )
    assert response.status_code == 202
    await writer.drain()
    f = LogFilter(start_time=iso(data.start), end_time=iso(data.end))
    mine = await stats(client, f, TENANT)
    theirs = await stats(client, f, OTHER_TENANT)
    assert theirs.headers["x-cache"] == "miss"
    assert mine.json()["total_count"] == 200
    assert theirs.json()["total_count"] == 205
    assert (await stats(client, f, TENANT)).json()["total_count"] == 200
    assert len(cache_keys(settings, TENANT)) == len(cache_keys(settings, OTHER_TENANT)) == 1


async def test_no_cache_header_recomputes_a_cached_answer(client, writer) -> None:
    data = await ingest_dataset(client, writer, per_tenant=100)
    f = LogFilter(start_time=iso(data.start), end_time=iso(data.end))
    assert (await stats(client, f)).json()["total_count"] == 100
    late = [{"service_name": "late", "level": "WARN", "message": "x", "timestamp": iso(data.start)}]
    response = await client.post(
        "/api/v1/logs/batch", json={"entries": late}, headers=tenant_headers()
    )
    assert response.status_code == 202
    await writer.drain()
    # A closed range is trusted not to change: a late entry shows after the TTL...
    cached = await stats(client, f)
    assert cached.headers["x-cache"] == "hit" and cached.json()["total_count"] == 100
    # ...or when the client asks for a fresh answer, which is stored for the next one.
    fresh = await stats(client, f, **{"Cache-Control": "no-cache"})
    assert fresh.headers["x-cache"] == "bypass" and fresh.json()["total_count"] == 101
    assert (await stats(client, f)).json()["total_count"] == 101


async def test_aggregate_and_services_are_cached_too(client, writer) -> None:
    data = await ingest_dataset(client, writer, per_tenant=100)
    window = {"start_time": iso(data.start), "end_time": iso(data.end)}
    for _ in range(2):
        aggregate = await client.post(
            "/api/v1/logs/aggregate", json={**window, "interval": "5m"}, headers=tenant_headers()
        )
        services = await client.get(
            "/api/v1/logs/services", params=window, headers=tenant_headers()
        )
    assert aggregate.headers["x-cache"] == services.headers["x-cache"] == "hit"


@contextlib.asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    async with AsyncTestClient(app=create_app(settings)) as test_client:
        yield test_client


async def test_redis_down_still_answers_correctly_uncached(client, writer, settings) -> None:
    data = await ingest_dataset(client, writer, per_tenant=300)
    f = LogFilter(start_time=iso(data.start), end_time=iso(data.end))
    # Nothing listens on this port: every cache call is refused at once.
    async with app_client(replace(settings, redis_port=free_port())) as no_redis:
        for _ in range(3):
            response = await stats(no_redis, f)
            assert response.status_code == 200, response.text
            assert response.headers["x-cache"] == "off"
            check_stats(response.json(), data.expected(TENANT, f))
        aggregate = await no_redis.post(
            "/api/v1/logs/aggregate",
            json={"start_time": iso(data.start), "end_time": iso(data.end), "interval": "1h"},
            headers=tenant_headers(),
        )
        assert aggregate.status_code == 200
        assert sum(b["count"] for b in aggregate.json()["buckets"]) == 300


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never answers: a hung Redis."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for w in held:
            w.close()


def make_cache(port: int, **overrides: float) -> QueryCache:
    timeout = overrides.pop("timeout", 0.1)
    return QueryCache(
        Redis(port=port, protocol=2, socket_timeout=timeout, socket_connect_timeout=timeout),
        keys=RedisKeys(f"test-cache-{uuid.uuid4().hex[:8]}", shards=1),
        closed_ttl=3600,
        open_ttl=5,
        ingest_lag=timedelta(minutes=2),
        timeout=timeout,
        **overrides,
    )


async def test_hung_redis_costs_a_query_a_bounded_wait(client, writer, settings) -> None:
    data = await ingest_dataset(client, writer, per_tenant=100)
    f = LogFilter(start_time=iso(data.start), end_time=iso(data.end))
    async with silent_server() as port, app_client(replace(settings, redis_port=port)) as hung:
        # The gateway's query cache gives up after QUERY_CACHE_TIMEOUT_MS (100 ms), where
        # the shared Redis client would wait 5 s; then it stays away for a while.
        for _ in range(3):
            started = time.monotonic()
            response = await stats(hung, f)
            assert response.status_code == 200, response.text
            assert response.headers["x-cache"] == "off"
            assert response.json()["total_count"] == 100
            assert time.monotonic() - started < 3.0


async def test_cache_is_used_again_once_redis_is_back() -> None:
    computed = 0

    async def compute() -> bytes:
        nonlocal computed
        computed += 1
        return b'{"n": %d}' % computed

    with private_redis() as redis_server:
        cache = make_cache(redis_server.port, backoff=0.0)

        async def ask() -> Answer:
            return await cache.get_or_compute(
                TENANT, "stats", {"q": 1}, closed=True, compute=compute
            )

        try:
            assert (await ask()).status == CacheStatus.MISS
            assert await ask() == Answer(b'{"n": 1}', CacheStatus.HIT)
            redis_server.kill()
            assert await ask() == Answer(b'{"n": 2}', CacheStatus.OFF)
            redis_server.start()
            # The first call may meet the connection broken by the kill; then it is back
            # (the private Redis keeps its data in an append-only file).
            await wait_until(lambda: _is_hit(ask()), within=10, what="the cache to answer again")
        finally:
            await cache.aclose()


async def _is_hit(answer: Awaitable[Answer]) -> bool:
    return (await answer).status == CacheStatus.HIT


async def test_disabled_cache_computes_every_time() -> None:
    cache = QueryCache(
        None,
        keys=RedisKeys("x", shards=1),
        closed_ttl=3600,
        open_ttl=5,
        ingest_lag=timedelta(0),
        timeout=0.1,
    )

    async def compute() -> bytes:
        return b"{}"

    answer = await cache.get_or_compute(TENANT, "stats", {}, closed=True, compute=compute)
    assert answer.status == CacheStatus.OFF


@pytest.mark.parametrize(
    ("ago", "relative", "closed"),
    [
        (None, False, False),
        (timedelta(hours=1), False, True),
        (timedelta(seconds=30), False, False),
        (timedelta(hours=1), True, False),
    ],
)
def test_only_absolute_ends_past_the_ingest_lag_are_closed(ago, relative, closed) -> None:
    # The end is taken from the same `now` the check uses, not at collection time: a long
    # suite must not turn "30 s ago" into "minutes ago".
    cache = make_cache(free_port())
    now = datetime.now(UTC)
    end = None if ago is None else now - ago
    assert cache.is_closed(end, relative=relative, now=now) is closed
