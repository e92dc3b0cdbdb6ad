"""Reading the ingest streams as one consumer of the `writers` group.

Order of reading follows ARCHITECTURE.md pitfall 3: first this consumer's own pending
list (what it read before a crash), then new messages; messages left pending by a dead
consumer are taken over with XAUTOCLAIM once idle longer than any batch takes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from shared.model import StoredMessage
from shared.redis_keys import RedisKeys
from shared.streams import GROUP, PAYLOAD_FIELD, decode_message

log = logging.getLogger("writer.consumer")


@dataclass(slots=True)
class Delivery:
    """One stream message as read: decoded, or with the reason it could not be."""

    stream: str
    message_id: str
    payload: bytes
    message: StoredMessage | None
    decode_error: str | None = None

    @property
    def rows(self) -> int:
        return len(self.message.records) if self.message else 0


def _delivery(stream: str, message_id: str, fields: dict[bytes, bytes]) -> Delivery:
    payload = fields.get(PAYLOAD_FIELD, b"")
    try:
        return Delivery(stream, message_id, payload, decode_message(payload))
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return Delivery(stream, message_id, payload, None, f"undecodable message: {exc}")


Reply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes] | None]]]]


def _parse(reply: Reply | None) -> tuple[list[Delivery], dict[str, list[str]]]:
    """Deliveries, plus the ids read whose entries no longer exist (to acknowledge)."""
    found: list[Delivery] = []
    gone: dict[str, list[str]] = {}
    for stream, entries in reply or []:
        name = stream.decode()
        for message_id, fields in entries:
            if fields:
                found.append(_delivery(name, message_id.decode(), fields))
            else:
                gone.setdefault(name, []).append(message_id.decode())
    return found, gone


class StreamConsumer:
    def __init__(self, redis: Redis, keys: RedisKeys, consumer: str, claim_idle_ms: int) -> None:
        self._redis = redis
        self._keys = keys
        self.name = consumer
        self._claim_idle_ms = claim_idle_ms
        # Per shard, the id after which to read this consumer's own pending messages; empty
        # once they are all read again, then new messages (">") are read.
        self._pending_cursor: dict[Any, Any] = {}
        self._next_claim = 0.0
        self.reread_pending()

    async def ensure_groups(self) -> None:
        """Create the group on every shard, reading from the start ("0"): messages queued
        before the first writer ever ran are not skipped."""
        for stream in self._keys.all_shards():
            try:
                await self._redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def read(self, count: int, block_ms: int) -> list[Delivery]:
        """Up to `count` messages per shard: own pending ones first, then claimed, then new."""
        try:
            while self._pending_cursor:
                found = await self._read_own_pending(count)
                if found:
                    return found
            claimed = await self._claim_abandoned(count)
            if claimed:
                return claimed
            reply = await self._redis.xreadgroup(
                GROUP,
                self.name,
                dict.fromkeys(self._keys.all_shards(), ">"),
                count=count,
                block=block_ms,
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Redis restarted without persistence (or a stream was deleted).
            log.warning("consumer group missing, recreating it")
            await self.ensure_groups()
            return []
        found, gone = _parse(reply)
        await self._ack_ids(gone)
        return found

    async def _read_own_pending(self, count: int) -> list[Delivery]:
        reply = await self._redis.xreadgroup(GROUP, self.name, self._pending_cursor, count=count)
        found, gone = _parse(reply)
        await self._ack_ids(gone)
        advanced = False
        for stream, entries in reply or []:
            if entries:
                self._pending_cursor[stream.decode()] = entries[-1][0].decode()
                advanced = True
        if not advanced:
            self._pending_cursor = {}
        return found

    async def _claim_abandoned(self, count: int) -> list[Delivery]:
        now = time.monotonic()
        if now < self._next_claim:
            return []
        self._next_claim = now + self._claim_idle_ms / 2000
        found: list[Delivery] = []
        for stream in self._keys.all_shards():
            reply = await self._redis.xautoclaim(
                stream, GROUP, self.name, min_idle_time=self._claim_idle_ms, count=count
            )
            # RESP2 reply: [next_start_id, [[id, fields], ...], deleted_ids]
            for message_id, fields in reply[1]:
                if fields:
                    found.append(_delivery(stream, message_id.decode(), fields))
            if reply[1]:
                log.info("claimed %d abandoned messages on %s", len(reply[1]), stream)
        return found

    def reread_pending(self) -> None:
        """Read this consumer's pending list again from its start: at start-up (what it
        held before a crash) and after a failed batch (what it still holds)."""
        self._pending_cursor = dict.fromkeys(self._keys.all_shards(), "0")

    async def _ack_ids(self, ids: dict[str, list[str]]) -> None:
        for stream, message_ids in ids.items():
            await self._redis.xack(stream, GROUP, *message_ids)

    async def ack(self, deliveries: list[Delivery]) -> None:
        by_stream: dict[str, list[str]] = {}
        for d in deliveries:
            by_stream.setdefault(d.stream, []).append(d.message_id)
        await self._ack_ids(by_stream)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Park a message that cannot be stored, with why, and release it, atomically (MULTI):
        a crash in between would otherwise park it twice or release it unparked."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(
                self._keys.dead_letter,
                {
                    "stream": delivery.stream,
                    "message_id": delivery.message_id,
                    "reason": reason[:2000],
                    "payload": delivery.payload,
                    "consumer": self.name,
                },
            )
            pipe.xack(delivery.stream, GROUP, delivery.message_id)
            await pipe.execute()

    async def trim_acknowledged(self) -> None:
        """XTRIM MINID up to the oldest message not yet acknowledged, on every shard.

        MINID, not MAXLEN: MAXLEN drops entries no writer has read. The group's state
        (last delivered id, oldest pending id) is read atomically in MULTI so a message
        delivered in between is never below the cut.
        """
        for stream in self._keys.all_shards():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xinfo_groups(stream)
                pipe.xpending(stream, GROUP)
                groups, pending = await pipe.execute()
            group = next((g for g in groups if g["name"] in (GROUP, GROUP.encode())), None)
            if group is None:
                continue
            if pending["pending"]:
                min_id = pending["min"]
                cut = min_id.decode() if isinstance(min_id, bytes) else str(min_id)
            else:
                last = group["last-delivered-id"]
                last = last.decode() if isinstance(last, bytes) else str(last)
                ms, seq = last.split("-")
                cut = f"{ms}-{int(seq) + 1}"
            if cut != "0-1":
                await self._redis.xtrim(stream, minid=cut, approximate=False)
