"""The live tail of one gateway process: one Redis subscription, one feed per tenant
with clients here, the connection limits, and the safety net against lost publishes.

The subscription (a client with no socket timeout) holds a private control channel plus
the channel of every tenant with a client in this process; it is made again with capped
backoff when Redis goes away, and every TAIL_POLL_SECONDS (and at once after a
reconnect) the tenants' last commit numbers are read from PostgreSQL, so a commit whose
publish never arrived is read from there (tail_feed.py) instead of being skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from services.gateway.metrics import TAIL_CLIENTS
from services.gateway.tail.catchup import TailReader
from services.gateway.tail.events import Position, dropped_frame
from services.gateway.tail.feed import TenantFeed
from services.gateway.tail.session import SessionLimits, TailSession
from shared.errors import RateLimited, Unavailable
from shared.filters import CompiledFilter
from shared.redis_keys import RedisKeys
from shared.settings import Settings

log = logging.getLogger("gateway.tail")

_SUBSCRIBE_TIMEOUT_SECONDS = 5.0
_BACKOFF_CAP_SECONDS = 5.0


class TailHub:
    def __init__(self, settings: Settings, reader: TailReader, redis: Redis) -> None:
        self._settings = settings
        self._reader = reader
        self._redis = redis
        self._keys = RedisKeys.from_settings(settings)
        self._control = self._keys.tail_control(str(uuid.uuid4())).encode()
        self._limits = SessionLimits(
            buffer_events=settings.tail_client_buffer,
            heartbeat_seconds=settings.tail_heartbeat_seconds,
            retry_ms=settings.tail_retry_ms,
        )
        self._feeds: dict[uuid.UUID, TenantFeed] = {}
        self._feed_tasks: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._starting: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._by_channel: dict[bytes, TenantFeed] = {}
        self._subscribed: dict[bytes, asyncio.Event] = {}
        self._clients: dict[uuid.UUID, int] = {}
        self._total = 0
        self._pubsub: PubSub | None = None
        self._subscription_lock = asyncio.Lock()
        self._poll_now = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.stopping = False

    # Lifecycle.

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen(), name="tail-listen"),
            asyncio.create_task(self._poll(), name="tail-poll"),
        ]

    def begin_shutdown(self) -> None:
        """Refuse new streams and end every open one with a final event (SIGTERM)."""
        if self.stopping:
            return
        self.stopping = True
        for feed in self._feeds.values():
            for client in list(feed.clients):
                client.stop()

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._feed_tasks.values(), *self._starting.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # Clients.

    async def open(
        self, tenant_id: uuid.UUID, where: CompiledFilter, resume: Position | None
    ) -> TailSession:
        """A new client of `tenant_id`, attached to the tenant's feed, or RateLimited
        (a connection limit) or Unavailable (shutting down, Redis or PostgreSQL down)."""
        if self.stopping:
            raise Unavailable("this gateway is shutting down; reconnect", retry_after=1)
        self._reserve(tenant_id)
        try:
            feed = await self._feed(tenant_id)
            notice = b""
            start = Position(feed.head)
            if resume is not None:
                committed = await self._reader.committed_seq(tenant_id)
                if resume.seq <= committed:
                    start = resume
                else:
                    notice = dropped_frame(
                        start,
                        "unknown_position",
                        f"event id {resume} is ahead of this tenant's stream (at "
                        f"{committed}); the stream starts from now",
                        None,
                    )
                    resume = None
            if self.stopping:
                raise Unavailable("this gateway is shutting down; reconnect", retry_after=1)
        except BaseException:
            self._release(tenant_id)
            raise
        session = TailSession(
            tenant_id,
            where,
            start,
            resume=resume is not None,
            feed=feed,
            reader=self._reader,
            limits=self._limits,
            on_close=self._closed,
            notice=notice,
        )
        feed.clients.add(session)
        return session

    def _reserve(self, tenant_id: uuid.UUID) -> None:
        s = self._settings
        held = self._clients.get(tenant_id, 0)
        if held >= s.tail_max_clients_per_tenant:
            raise RateLimited(
                f"this tenant already has {held} live tail streams on this gateway "
                f"(TAIL_MAX_CLIENTS_PER_TENANT = {s.tail_max_clients_per_tenant}); "
                "close one first",
                retry_after=5,
                extra={
                    "limit": "tail_max_clients_per_tenant",
                    "limit_value": s.tail_max_clients_per_tenant,
                },
            )
        if self._total >= s.tail_max_clients:
            raise RateLimited(
                f"this gateway serves its maximum of {s.tail_max_clients} live tail "
                "streams (TAIL_MAX_CLIENTS); retry later or on another replica",
                retry_after=5,
                extra={"limit": "tail_max_clients", "limit_value": s.tail_max_clients},
            )
        self._clients[tenant_id] = held + 1
        self._total += 1
        TAIL_CLIENTS.inc()

    def _release(self, tenant_id: uuid.UUID) -> None:
        self._total -= 1
        TAIL_CLIENTS.dec()
        left = self._clients[tenant_id] - 1
        if left:
            self._clients[tenant_id] = left
            return
        del self._clients[tenant_id]
        feed = self._feeds.pop(tenant_id, None)
        if feed is None:
            return
        channel = self._channel(tenant_id)
        self._by_channel.pop(channel, None)
        for task in (self._feed_tasks.pop(tenant_id, None), self._starting.pop(tenant_id, None)):
            if task is not None:
                task.cancel()
        # Fire and forget: the subscription lock orders it with a new subscribe.
        asyncio.get_running_loop().create_task(self._unsubscribe(tenant_id, channel))

    def _closed(self, session: TailSession) -> None:
        feed = self._feeds.get(session.tenant_id)
        if feed is not None:
            feed.clients.discard(session)
        self._release(session.tenant_id)

    # Feeds and the subscription.

    def _channel(self, tenant_id: uuid.UUID) -> bytes:
        return self._keys.tail_channel(str(tenant_id)).encode()

    async def _feed(self, tenant_id: uuid.UUID) -> TenantFeed:
        feed = self._feeds.get(tenant_id)
        if feed is None:
            feed = TenantFeed(tenant_id)
            self._feeds[tenant_id] = feed
            self._by_channel[self._channel(tenant_id)] = feed
            self._starting[tenant_id] = asyncio.create_task(self._start_feed(feed))
        starting = self._starting.get(tenant_id)
        if starting is not None:
            try:
                async with asyncio.timeout(_SUBSCRIBE_TIMEOUT_SECONDS):
                    await asyncio.shield(starting)
            except (TimeoutError, RedisError, OSError, psycopg.Error, PoolTimeout) as exc:
                raise Unavailable(
                    "live tail is unavailable (Redis or PostgreSQL does not answer); retry",
                    retry_after=2,
                ) from exc
        return feed

    async def _start_feed(self, feed: TenantFeed) -> None:
        """Subscribe, then read where the tenant's commits are: every commit after that
        number is published after we listen, so none is missed (and if one is, the
        poll finds it)."""
        channel = self._channel(feed.tenant_id)
        confirmed = self._subscribed.setdefault(channel, asyncio.Event())
        async with self._subscription_lock:
            if self._pubsub is not None:
                await self._pubsub.subscribe(channel)
        await confirmed.wait()
        feed.start(await self._reader.committed_seq(feed.tenant_id))
        self._feed_tasks[feed.tenant_id] = asyncio.create_task(feed.run())
        self._starting.pop(feed.tenant_id, None)

    async def _unsubscribe(self, tenant_id: uuid.UUID, channel: bytes) -> None:
        async with self._subscription_lock:
            if tenant_id in self._feeds or self._pubsub is None:
                return
            self._subscribed.pop(channel, None)
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.unsubscribe(channel)

    async def _listen(self) -> None:
        delay = 0.1
        failing = False
        while True:
            pubsub = self._redis.pubsub()
            try:
                async with self._subscription_lock:
                    for event in self._subscribed.values():
                        event.clear()
                    await pubsub.subscribe(self._control, *self._by_channel)
                    self._pubsub = pubsub
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._route(message)
                        if failing:
                            log.info("live tail subscription restored")
                            failing = False
                        delay = 0.1
            except (RedisError, OSError) as exc:
                if not failing:
                    log.warning("live tail subscription lost (%s); reconnecting", exc)
                    failing = True
            except Exception:
                log.exception("live tail subscription failed; reconnecting")
            finally:
                self._pubsub = None
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(_BACKOFF_CAP_SECONDS, delay * 2)

    def _route(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel: bytes = message["channel"]
        if kind == "message":
            feed = self._by_channel.get(channel)
            if feed is not None:
                feed.push(message["data"])
        elif kind == "subscribe":
            if channel == self._control:
                # (Re)connected: publishes may have been missed meanwhile.
                self._poll_now.set()
            else:
                self._subscribed.setdefault(channel, asyncio.Event()).set()

    async def _poll(self) -> None:
        failing = False
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.tail_poll_seconds):
                    await self._poll_now.wait()
            self._poll_now.clear()
            started = [f for t, f in self._feeds.items() if t not in self._starting]
            if not started:
                continue
            try:
                seqs = await self._reader.committed_seqs([f.tenant_id for f in started])
            except (psycopg.Error, PoolTimeout) as exc:
                if not failing:
                    log.warning("live tail cannot poll PostgreSQL: %s", exc)
                    failing = True
                continue
            except Exception:
                log.exception("live tail poll failed")
                continue
            failing = False
            for feed in started:
                feed.note_committed(seqs.get(feed.tenant_id, 0))
