"""Redis cache of query answers: per tenant, per normalised request, never in the way.

An answer is cached as the encoded response body under
`<prefix>:qcache:<tenant>:<kind>:<digest of the normalised request>`. A time range closed
in the past (an absolute end at least QUERY_CACHE_INGEST_LAG_SECONDS ago) is cached for
QUERY_CACHE_TTL_SECONDS; an open one (no end, a relative end such as `now`, or an end
within the ingest lag) for QUERY_CACHE_OPEN_TTL_SECONDS. Late entries (stamped in a range
already closed) and retention show up once the entry expires.

Redis is an optimisation here, not a dependency: every Redis call has a short timeout,
a failure answers uncached, and after one the cache is left alone for a few seconds, so
a dead or hung Redis costs queries almost nothing. A computed answer is sent without
waiting for its SET (a Redis round trip); a read of the same key in this process waits
for that SET first, so a repeat right after a miss is a hit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from litestar import Response
from redis.asyncio import Redis

from services.gateway.metrics import CACHE_REQUESTS
from shared.filters import CompiledFilter, LogFilter
from shared.optional_redis import BACKOFF_SECONDS, FAILED, OptionalRedis
from shared.redis_conn import make_redis
from shared.redis_keys import RedisKeys
from shared.settings import Settings

# Larger answers are not worth the memory; they are recomputed each time.
MAX_CACHED_BYTES = 1024 * 1024


class CacheStatus(enum.StrEnum):
    """How an answer was produced; the gateway sends it as the `X-Cache` header."""

    HIT = "hit"  # from Redis
    # computed, and being stored (a SET that fails then turns the cache off for a while)
    MISS = "miss"
    BYPASS = "bypass"  # computed; the caller asked for a fresh answer (Cache-Control)
    OFF = "off"  # computed; the cache is disabled or Redis is unavailable


@dataclass(frozen=True, slots=True)
class Answer:
    body: bytes
    status: CacheStatus


class QueryCache:
    """Get-or-compute over Redis. `redis=None` (or both TTLs 0) disables it."""

    def __init__(
        self,
        redis: Redis | None,
        *,
        keys: RedisKeys,
        closed_ttl: int,
        open_ttl: int,
        ingest_lag: timedelta,
        timeout: float,
        backoff: float = BACKOFF_SECONDS,
    ) -> None:
        self._redis = OptionalRedis(redis, what="query cache", timeout=timeout, backoff=backoff)
        self._keys = keys
        self._closed_ttl = closed_ttl
        self._open_ttl = open_ttl
        self.ingest_lag = ingest_lag
        # SETs under way, by key: a read of the key waits for its SET.
        self._storing: dict[str, asyncio.Task[Any]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> QueryCache:
        """A cache with its own Redis client: the shared one waits 5 s on a hung server,
        which is right for ingest (it must know) and wrong for a cache (it must not wait)."""
        timeout = settings.query_cache_timeout_ms / 1000
        enabled = settings.query_cache_ttl_seconds > 0 or settings.query_cache_open_ttl_seconds > 0
        redis = make_redis(settings, timeout=timeout) if enabled else None
        return cls(
            redis,
            keys=RedisKeys.from_settings(settings),
            closed_ttl=settings.query_cache_ttl_seconds,
            open_ttl=settings.query_cache_open_ttl_seconds,
            ingest_lag=timedelta(seconds=settings.query_cache_ingest_lag_seconds),
            timeout=timeout,
        )

    async def aclose(self) -> None:
        if self._storing:
            await asyncio.gather(*self._storing.values(), return_exceptions=True)
        await self._redis.aclose()

    def key(self, tenant_id: uuid.UUID, kind: str, key_parts: Any) -> str:
        """The Redis key of one request: tenant and kind in clear (to count or drop a
        tenant's entries), the normalised request as a digest."""
        encoded = msgspec.json.encode(key_parts, order="deterministic")
        digest = hashlib.sha256(encoded).hexdigest()[:32]
        return self._keys.query_cache(str(tenant_id), kind, digest)

    def is_closed(self, end: datetime | None, *, relative: bool, now: datetime) -> bool:
        """True when the range ends at an absolute instant old enough that no entry can
        still be arriving for it (apart from late ones, see the module docstring)."""
        return end is not None and not relative and end <= now - self.ingest_lag

    async def get_or_compute(
        self,
        tenant_id: uuid.UUID,
        kind: str,
        key_parts: Any,
        *,
        closed: bool,
        compute: Callable[[], Awaitable[bytes]],
        bypass: bool = False,
    ) -> Answer:
        """The cached body for this request, or `compute()`'s, stored for next time.

        `kind` names the endpoint (stats, aggregate, list, ...); `key_parts` is anything
        msgspec encodes that identifies the request once normalised (see `filter_key`),
        including page or cursor. `bypass` skips the read (a client asking for a fresh
        answer) but still stores the result.
        """
        ttl = self._closed_ttl if closed else self._open_ttl
        redis = self._redis.ready
        if redis is None or ttl <= 0:
            return Answer(await compute(), CacheStatus.OFF)
        key = self.key(tenant_id, kind, key_parts)
        usable = True
        if not bypass:
            storing = self._storing.get(key)
            if storing is not None:
                await asyncio.shield(storing)
            cached = await self._redis.call(redis.get(key))
            if isinstance(cached, bytes):
                return Answer(cached, CacheStatus.HIT)
            # Redis failed this request's read: its answer is not stored either.
            usable = cached is not FAILED
        body = await compute()
        if not (usable and self._redis.usable):
            return Answer(body, CacheStatus.OFF)
        if len(body) <= MAX_CACHED_BYTES:
            self._store(redis, key, body, ttl)
        return Answer(body, CacheStatus.BYPASS if bypass else CacheStatus.MISS)

    def _store(self, redis: Redis, key: str, body: bytes, ttl: int) -> None:
        """SET in the background (a failure is handled as any, by OptionalRedis)."""
        task = asyncio.create_task(self._redis.call(redis.set(key, body, ex=ttl)))
        self._storing[key] = task

        def done(finished: asyncio.Task[Any]) -> None:
            if self._storing.get(key) is finished:
                del self._storing[key]

        task.add_done_callback(done)


def _is_relative(value: str | datetime | None) -> bool:
    return isinstance(value, str) and value.strip().lower().startswith("now")


def filter_key(raw: LogFilter, compiled: CompiledFilter) -> dict[str, Any]:
    """The normalised form of a filter for cache keys: the compiled terms (sorted, UTC,
    duplicates removed), with a relative time kept as written (`now-1h`) so that repeats
    of the same relative query share a key instead of differing by the clock."""
    # Its fields as they are: dataclasses.asdict would deep-copy every value (~45 µs a
    # request, measured) for the same encoded key.
    key = {f.name: getattr(compiled, f.name) for f in dataclasses.fields(compiled)}
    if _is_relative(raw.start_time):
        key["start"] = str(raw.start_time).strip().lower()
    if _is_relative(raw.end_time):
        key["end"] = str(raw.end_time).strip().lower()
    return key


def range_is_closed(
    cache: QueryCache, raw: LogFilter, compiled: CompiledFilter, now: datetime | None = None
) -> bool:
    """Whether the filter's time range is closed in the past (cacheable for long)."""
    return cache.is_closed(
        compiled.end, relative=_is_relative(raw.end_time), now=now or datetime.now(UTC)
    )


async def cached_response(
    cache: QueryCache,
    tenant_id: uuid.UUID,
    kind: str,
    key_parts: Any,
    *,
    closed: bool,
    compute: Callable[[], Awaitable[bytes]],
    cache_control: str,
) -> Response[bytes]:
    """A JSON answer through the cache, with `X-Cache` saying how it was produced; a
    `Cache-Control: no-cache` request asks for a fresh one (stored all the same)."""
    answer = await cache.get_or_compute(
        tenant_id,
        kind,
        key_parts,
        closed=closed,
        compute=compute,
        bypass="no-cache" in cache_control.lower(),
    )
    CACHE_REQUESTS.labels(kind, str(answer.status)).inc()
    return Response(
        answer.body, media_type="application/json", headers={"X-Cache": str(answer.status)}
    )
