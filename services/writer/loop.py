"""The writer's loop: gather → store in one transaction → acknowledge → trim.

Messages are acknowledged only after COMMIT; a crash anywhere before that leaves them
pending in Redis, and the inbox makes their redelivery a no-op. PostgreSQL or Redis
going away pauses the loop (capped exponential backoff with jitter); the batch in hand
is left pending and read again, never dropped. A message whose content cannot be stored is
retried alone and, after WRITER_MAX_ATTEMPTS, parked on the dead-letter stream.

On SIGTERM the batch in hand gets STOP_GRACE_SECONDS to finish; after that it is
cancelled, which is safe at every await: before COMMIT the transaction rolls back, after
it the unacknowledged messages are redelivered to the next writer and skipped by the inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from redis.exceptions import RedisError

from services.writer import failpoint, metrics
from services.writer.consumer import Delivery, StreamConsumer
from services.writer.store import (
    Stored,
    ensure_partitions,
    is_data_error,
    partition_starts,
    store_batch,
)
from services.writer.tail import TailPublisher
from services.writer.tracing import batch_span, record_stored, transaction_span
from shared.lifecycle import Backoff, sleep_or_stop
from shared.settings import Settings

log = logging.getLogger("writer")

# psycopg.Error as a whole: content errors (classes 22/23) are handled per message before
# they get here, so what remains (lost connection, shutdown, missing table) is the
# environment's fault and pauses the writer instead of crashing it.
_TRANSIENT = (psycopg.Error, PoolTimeout, RedisError, OSError, TimeoutError)
_TRIM_EVERY_SECONDS = 1.0
STOP_GRACE_SECONDS = 5.0
# Until messages have been seen, assume large ones: reading too few costs one more round
# trip, reading too many makes a transaction many times WRITER_BATCH_ROWS.
_INITIAL_ROWS_PER_MESSAGE = 1000.0


@dataclass
class WriterStats:
    rows: int = 0
    messages: int = 0
    repeats: int = 0
    dead_letters: int = 0
    batches: int = 0


class Writer:
    def __init__(
        self,
        settings: Settings,
        pool: AsyncConnectionPool,
        consumer: StreamConsumer,
        *,
        partition_unit: str = "day",
        stop_grace: float = STOP_GRACE_SECONDS,
        tail: TailPublisher | None = None,
    ) -> None:
        self._settings = settings
        self._tail = tail
        self._stop_grace = stop_grace
        self._rows_per_message = _INITIAL_ROWS_PER_MESSAGE
        self._pool = pool
        self._consumer = consumer
        self._unit = partition_unit
        self._known_partitions: set[object] = set()
        self._attempts: dict[tuple[str, str], int] = {}
        self._last_trim = 0.0
        self.stats = WriterStats()

    @property
    def settings(self) -> Settings:
        return self._settings

    async def run(self, stop: asyncio.Event) -> None:
        """Loop until `stop` is set; the batch in hand is finished or left pending."""
        backoff = Backoff()
        state = "starting"
        while not stop.is_set():
            try:
                if state != "running":
                    await self._consumer.ensure_groups()
                if not await self._step_within_grace(stop):
                    break
                backoff.reset()
                if state != "running":
                    log.info("writer %s running", self._consumer.name)
                    state = "running"
            except _TRANSIENT as exc:
                if state != "waiting":
                    metrics.PAUSES.inc()
                    log.warning("writer paused (%s: %s); retrying", type(exc).__name__, exc)
                    state = "waiting"
                self._consumer.reread_pending()
                await sleep_or_stop(stop, backoff.next_delay())
        log.info("writer %s stopped", self._consumer.name)

    async def _step_within_grace(self, stop: asyncio.Event) -> bool:
        """One step; once `stop` is set it may run STOP_GRACE_SECONDS more, then it is
        cancelled (its messages stay pending). False when it had to be cancelled."""
        step = asyncio.create_task(self.step(stop))
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({step, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                await asyncio.wait({step}, timeout=self._stop_grace)
        finally:
            stopping.cancel()
        if not step.done():
            step.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await step
            log.warning("stopped mid-batch; its messages stay pending for the next writer")
            return False
        step.result()
        return True

    async def step(self, stop: asyncio.Event | None = None) -> int:
        """Gather one batch, store it, acknowledge it. Returns the messages handled."""
        batch = await self._gather(stop)
        if not batch:
            await self._maybe_trim()
            return 0
        started = time.perf_counter()
        with batch_span(batch):
            await self._store_and_ack(batch)
        metrics.BATCH_DURATION.observe(time.perf_counter() - started)
        await self._maybe_trim()
        return len(batch)

    async def drain(self) -> int:
        """Store everything queued now, then return (tests and one-shot tools)."""
        handled = 0
        while True:
            n = await self.step()
            if n == 0:
                return handled
            handled += n

    async def _gather(self, stop: asyncio.Event | None) -> list[Delivery]:
        """Up to WRITER_BATCH_ROWS rows, waiting at most WRITER_BATCH_WAIT_MS for them, and
        only while the streams keep delivering: when nothing more arrives within a quarter
        of the wait, the batch goes as it is. At high rates batches fill up; at low rates
        entries are not held back for a wait that brings nothing."""
        s = self._settings
        batch = await self._read(s.writer_batch_rows, block_ms=1000 if stop is not None else 1)
        if not batch:
            return []
        rows = sum(d.rows for d in batch)
        deadline = time.monotonic() + s.writer_batch_wait_ms / 1000
        quiet_ms = max(1, s.writer_batch_wait_ms // 4)
        while rows < s.writer_batch_rows and (stop is None or not stop.is_set()):
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                break
            more = await self._read(
                s.writer_batch_rows - rows, block_ms=min(remaining_ms, quiet_ms)
            )
            if not more:
                break
            batch.extend(more)
            rows += sum(d.rows for d in more)
        return batch

    async def _read(self, rows_wanted: int, block_ms: int) -> list[Delivery]:
        """About `rows_wanted` rows of messages. XREADGROUP's COUNT is per shard and a
        message holds one request (1 to MAX_BATCH_ENTRIES rows), so the count follows the
        message sizes seen so far."""
        per_shard = rows_wanted / (self._rows_per_message * self._settings.stream_shards)
        found = await self._consumer.read(max(1, min(1000, math.ceil(per_shard))), block_ms)
        if found:
            seen = sum(d.rows for d in found) / len(found)
            self._rows_per_message = max(1.0, (self._rows_per_message + seen) / 2)
        return found

    async def _store_and_ack(self, batch: list[Delivery]) -> None:
        undecodable = [d for d in batch if d.message is None]
        for d in undecodable:
            await self._dead_letter(d, d.decode_error or "undecodable message")
        good = [d for d in batch if d.message is not None]
        if not good:
            return
        try:
            stored = await self._store(good)
        except psycopg.Error as exc:
            if not is_data_error(exc):
                raise
            log.warning("batch of %d messages refused (%s); storing one by one", len(good), exc)
            await self._store_one_by_one(good)
            return
        await failpoint.reached("after_commit")
        await self._acknowledge(stored)

    async def _store(self, deliveries: list[Delivery]) -> Stored:
        with transaction_span(deliveries) as span:
            stored = await self._store_in_transaction(deliveries)
            record_stored(
                span, messages=len(stored.fresh), repeated=len(stored.repeated), rows=stored.rows
            )
            return stored

    async def _store_in_transaction(self, deliveries: list[Delivery]) -> Stored:
        async with self._pool.connection() as conn:
            await self._ensure_partitions(conn, deliveries)
            try:
                return await store_batch(conn, deliveries)
            except psycopg.errors.CheckViolation as exc:
                if "no partition" not in str(exc):
                    raise
                # A partition vanished under the cache (dropped by hand or by retention).
                self._known_partitions.clear()
                await self._ensure_partitions(conn, deliveries)
                return await store_batch(conn, deliveries)

    async def _ensure_partitions(
        self, conn: psycopg.AsyncConnection, batch: list[Delivery]
    ) -> None:
        starts = partition_starts(
            (row for d in batch if d.message for row in d.message.records), self._unit
        )
        missing = starts - self._known_partitions
        if missing:
            await conn.set_autocommit(True)
            try:
                await ensure_partitions(conn, missing)
            finally:
                await conn.set_autocommit(False)
            self._known_partitions |= missing

    async def _store_one_by_one(self, batch: list[Delivery]) -> None:
        for delivery in batch:
            key = (delivery.stream, delivery.message_id)
            try:
                stored = await self._store([delivery])
            except psycopg.Error as exc:
                if not is_data_error(exc):
                    raise
                attempts = self._attempts.get(key, 0) + 1
                self._attempts[key] = attempts
                if attempts >= self._settings.writer_max_attempts:
                    await self._dead_letter(delivery, f"{type(exc).__name__}: {exc}")
                else:
                    log.warning("message %s failed (attempt %d): %s", key, attempts, exc)
                    # Left pending: read again from the pending list on the next step.
                    self._consumer.reread_pending()
                continue
            await self._acknowledge(stored)

    async def _acknowledge(self, stored: Stored) -> None:
        """XACK after COMMIT. If Redis fails here the messages stay pending and their
        redelivery is recognised by the inbox, so nothing is stored twice."""
        await self._consumer.ack(stored.fresh + stored.repeated)
        for d in stored.fresh + stored.repeated:
            self._attempts.pop((d.stream, d.message_id), None)
        self.stats.rows += stored.rows
        self.stats.messages += len(stored.fresh)
        self.stats.repeats += len(stored.repeated)
        self.stats.batches += 1
        metrics.BATCHES.inc()
        metrics.ROWS.inc(stored.rows)
        metrics.BATCH_ROWS.observe(stored.rows)
        metrics.MESSAGES.labels("stored").inc(len(stored.fresh))
        metrics.MESSAGES.labels("repeated").inc(len(stored.repeated))
        if stored.repeated:
            log.info("skipped %d redelivered messages already stored", len(stored.repeated))
        if self._tail is not None:
            await self._tail.publish(stored.tail)  # never raises: gateways fill gaps from PG

    async def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        log.error("dead-lettering %s %s: %s", delivery.stream, delivery.message_id, reason)
        await self._consumer.dead_letter(delivery, reason)
        self._attempts.pop((delivery.stream, delivery.message_id), None)
        self.stats.dead_letters += 1
        metrics.DEAD_LETTERS.inc()

    async def _maybe_trim(self) -> None:
        now = time.monotonic()
        if now - self._last_trim >= _TRIM_EVERY_SECONDS:
            self._last_trim = now
            await self._consumer.trim_acknowledged()
