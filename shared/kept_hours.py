"""Counts of closed hours, kept in Redis, for the counts the rollups cannot answer.

Counting with a term the rollups do not hold (a search word, an id, a host, metadata)
reads raw rows: a word over 7 days of a busy tenant matches ~700k rows, a third of a
second with every page in memory and seconds without. But an hour that is over changes
only by late entries and by retention, and both change the tenant's row count for that
hour, which the rollups hold in the same transaction as the rows. So each whole past
hour's grouped counts are kept here under that row count (the hour's *fingerprint*); a
later count of the same question takes the kept hours whose fingerprint still matches
and counts raw only the rest (shared/rollups.py, `raw_rows`). Answers stay exact.

An entry is keyed by tenant, a digest of the question (filter terms, grouping, bucket)
and the hour; it expires after SEARCH_COUNT_KEEP_SECONDS. Redis is an optimisation
here, never a dependency: every call has a short timeout, a failure counts raw, and
after one the store is left alone for a few seconds.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from redis.asyncio import Redis

from shared.optional_redis import BACKOFF_SECONDS, OptionalRedis
from shared.redis_conn import make_redis
from shared.redis_keys import RedisKeys
from shared.settings import Settings

# An hour with more groups than this (grouped by host, say) is not kept: counted again.
MAX_KEPT_BYTES = 64 * 1024

# One kept hour is its fingerprint and its rows, each as spans_statement returns them
# (sub-bucket, the group's values, count, first and last, step).
Row = tuple[Any, ...]
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(tuple[int, list[list[Any]]])


class KeptHours:
    """Get and put the grouped counts of whole past hours. `redis=None` disables it."""

    def __init__(
        self,
        redis: Redis | None,
        keys: RedisKeys,
        *,
        ttl: int,
        timeout: float,
        backoff: float = BACKOFF_SECONDS,
    ) -> None:
        self._redis = OptionalRedis(
            redis if ttl > 0 else None, what="kept hours", timeout=timeout, backoff=backoff
        )
        self._keys = keys
        self._ttl = ttl

    @classmethod
    def from_settings(cls, settings: Settings) -> KeptHours:
        """A store with its own Redis client and short timeouts (see QueryCache)."""
        timeout = settings.query_cache_timeout_ms / 1000
        ttl = settings.search_count_keep_seconds
        return cls(
            make_redis(settings, timeout=timeout) if ttl > 0 else None,
            RedisKeys.from_settings(settings),
            ttl=ttl,
            timeout=timeout,
        )

    @property
    def enabled(self) -> bool:
        return self._redis.usable

    async def aclose(self) -> None:
        await self._redis.aclose()

    def keys_of(self, tenant_id: uuid.UUID, question: Any, hours: Sequence[datetime]) -> list[str]:
        """The key of each hour of one question (anything msgspec encodes that names the
        filter terms, grouping and bucket, without the time window)."""
        encoded = msgspec.json.encode(question, order="deterministic")
        digest = hashlib.sha256(encoded).hexdigest()[:32]
        return [
            self._keys.kept_hour(str(tenant_id), digest, int(hour.timestamp())) for hour in hours
        ]

    async def get(self, keys: list[str]) -> list[tuple[int, list[Row]] | None]:
        """Each key's (fingerprint, rows), None where nothing is kept (or Redis failed)."""
        redis = self._redis.ready
        if not keys or redis is None:
            return [None] * len(keys)
        found = await self._redis.call(redis.mget(keys))
        if not isinstance(found, list):
            return [None] * len(keys)
        return [_decoded(value) for value in found]

    async def put(self, items: dict[str, tuple[int, list[Row]]]) -> None:
        redis = self._redis.ready
        if not items or redis is None:
            return
        async with redis.pipeline(transaction=False) as pipe:
            for key, value in items.items():
                encoded = _encoder.encode(value)
                if len(encoded) <= MAX_KEPT_BYTES:
                    pipe.set(key, encoded, ex=self._ttl)
            await self._redis.call(pipe.execute())


def _decoded(value: bytes | None) -> tuple[int, list[Row]] | None:
    if value is None:
        return None
    try:
        fingerprint, rows = _decoder.decode(value)
    except msgspec.DecodeError:  # not ours (another version wrote it): count again
        return None
    return fingerprint, [tuple(row) for row in rows]
