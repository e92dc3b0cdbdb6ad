"""The stream figures of a scrape: each shard's backlog, pending messages and oldest
message's age, and the dead-letter stream's length, read from Redis when Prometheus asks.

Read at scrape time rather than kept up to date: the writers change these figures, not
the gateway, and one pipelined round trip per scrape costs Redis less than any polling.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.gateway.metrics import (
    DEAD_LETTERS,
    REDIS_UP,
    STREAM_BACKLOG,
    STREAM_MAX_BACKLOG,
    STREAM_OLDEST_AGE,
    STREAM_PENDING,
)
from shared.redis_keys import RedisKeys
from shared.streams import GROUP

log = logging.getLogger("gateway.metrics")

# A scrape must answer even when Redis hangs (Prometheus' default scrape timeout is 10 s).
_READ_TIMEOUT_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class ShardFigures:
    backlog: int
    pending: int
    oldest_age_seconds: float


def _id_ms(message_id: bytes | str) -> int:
    text = message_id.decode() if isinstance(message_id, bytes) else message_id
    return int(text.split("-")[0])


async def read_shards(redis: Redis, keys: RedisKeys) -> tuple[list[ShardFigures], int]:
    """Every shard's figures (in shard order) and the dead-letter stream's length, in one
    round trip, with ages measured on Redis's clock (the message ids are its milliseconds)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.time()
        for shard in keys.all_shards():
            pipe.xlen(shard)
            pipe.xpending(shard, GROUP)
            pipe.xrange(shard, count=1)
        pipe.xlen(keys.dead_letter)
        # A shard no writer has opened yet has no group: XPENDING fails for it alone.
        replies = await pipe.execute(raise_on_error=False)
    seconds, micros = replies[0]
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    shards: list[ShardFigures] = []
    for i in range(keys.shards):
        length, pending, first = replies[1 + 3 * i : 4 + 3 * i]
        if isinstance(length, Exception):
            raise length
        waiting = 0 if isinstance(pending, Exception) else int(pending["pending"])
        age_ms = now_ms - _id_ms(first[0][0]) if first and not isinstance(first, Exception) else 0
        shards.append(ShardFigures(int(length), waiting, max(0, age_ms) / 1000))
    dead = replies[-1]
    return shards, 0 if isinstance(dead, Exception) else int(dead)


async def refresh_stream_metrics(redis: Redis, keys: RedisKeys, max_backlog: int) -> None:
    """Set the stream gauges for this scrape; when Redis does not answer, redis_up is 0
    and the per-shard gauges are left empty (absent beats stale; the dead-letter count,
    without labels, keeps its last value)."""
    STREAM_MAX_BACKLOG.set(max_backlog)
    try:
        async with asyncio.timeout(_READ_TIMEOUT_SECONDS):
            shards, dead = await read_shards(redis, keys)
    except (RedisError, OSError, TimeoutError) as exc:
        log.debug("stream metrics unavailable: %r", exc)
        REDIS_UP.set(0)
        for gauge in (STREAM_BACKLOG, STREAM_PENDING, STREAM_OLDEST_AGE):
            gauge.clear()
        return
    REDIS_UP.set(1)
    # Cleared first: after a change of STREAM_SHARDS no series of a former shard lingers.
    # No await between here and the end, so a concurrent scrape never sees it half set.
    for gauge in (STREAM_BACKLOG, STREAM_PENDING, STREAM_OLDEST_AGE):
        gauge.clear()
    for index, figures in enumerate(shards):
        shard = str(index)
        STREAM_BACKLOG.labels(shard).set(figures.backlog)
        STREAM_PENDING.labels(shard).set(figures.pending)
        STREAM_OLDEST_AGE.labels(shard).set(figures.oldest_age_seconds)
    DEAD_LETTERS.set(dead)
