"""The stream hop between gateway and writers: key names, message encoding, enqueue.

One accepted HTTP request is one stream message (an msgpack-encoded IngestMessage) on
one of STREAM_SHARDS streams. Acknowledged messages are trimmed by the writer with
XTRIM MINID, so XLEN is the shard's backlog: what is queued or being written.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
from redis.asyncio import Redis

from shared.model import IngestMessage, StoredMessage
from shared.redis_keys import RedisKeys
from shared.settings import Settings

GROUP = "writers"
PAYLOAD_FIELD = b"m"

_encoder = msgspec.msgpack.Encoder(uuid_format="bytes")
_decoder = msgspec.msgpack.Decoder(StoredMessage)


def encode_message(message: IngestMessage) -> bytes:
    return _encoder.encode(message)


def decode_message(payload: bytes) -> StoredMessage:
    """The writer's reading of a message: rows as tuples (shared/model.py, StoredRow)."""
    return _decoder.decode(payload)


# Atomic admission: a replayed Idempotency-Key returns the first answer; a full shard
# refuses (the caller answers 503 + Retry-After) instead of queueing what may not fit;
# otherwise XADD and remember the answer under the key. No MAXLEN: trimming by length
# would delete messages nobody has read yet (ARCHITECTURE.md, pitfall 2).
_ENQUEUE = """
if KEYS[2] ~= '' then
  local previous = redis.call('GET', KEYS[2])
  if previous then return {'replay', previous} end
end
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return {'full', ''} end
local id = redis.call('XADD', KEYS[1], '*', 'm', ARGV[2])
if KEYS[2] ~= '' then redis.call('SET', KEYS[2], ARGV[3], 'EX', tonumber(ARGV[4])) end
return {'ok', id}
"""


class BacklogFull(Exception):
    """Every shard tried is at STREAM_MAX_BACKLOG."""


@dataclass(frozen=True, slots=True)
class Enqueued:
    message_id: str | None
    replayed_answer: bytes | None = None


class Enqueuer:
    """Puts accepted batches on the streams, round-robin over shards."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._keys = RedisKeys.from_settings(settings)
        self._max_backlog = settings.stream_max_backlog
        self._idem_ttl = settings.idempotency_ttl_seconds
        self._script = redis.register_script(_ENQUEUE)
        self._next_shard = itertools.cycle(range(settings.stream_shards))

    async def enqueue(
        self, payload: bytes, *, idempotency_key: str = "", answer: bytes = b""
    ) -> Enqueued:
        """XADD the payload; with an idempotency key, a repeat returns the first answer.

        Tries each shard at most once before giving up, so one slow shard does not
        refuse traffic the others can take.
        """
        for _ in range(self._keys.shards):
            shard = self._keys.shard(next(self._next_shard))
            status, value = await self._script(
                keys=[shard, idempotency_key],
                args=[self._max_backlog, payload, answer, self._idem_ttl],
            )
            if status == b"ok":
                return Enqueued(message_id=value.decode())
            if status == b"replay":
                return Enqueued(message_id=None, replayed_answer=value)
        raise BacklogFull

    async def previous_answer(self, idempotency_key: str) -> bytes | None:
        """The answer remembered under an idempotency key, if a request with it was
        accepted within IDEMPOTENCY_TTL_SECONDS."""
        answer: bytes | None = await self._redis.get(idempotency_key)
        return answer


async def committed_watermark(redis: Redis, keys: RedisKeys, now: datetime) -> datetime:
    """The instant up to which every accepted request is stored: when the oldest message
    still on any shard was added (writers trim what they acknowledged, so the first
    entry of a shard is the oldest not yet stored), or `now` when every shard is empty.
    Alert windows end here, so a backlog delays an alert instead of faking one."""
    async with redis.pipeline(transaction=False) as pipe:
        for shard in keys.all_shards():
            pipe.xrange(shard, count=1)
        firsts = await pipe.execute()
    oldest = now
    for entries in firsts:
        if entries:
            added_ms = int(entries[0][0].split(b"-")[0])
            oldest = min(oldest, datetime.fromtimestamp(added_ms / 1000, UTC))
    return oldest
