"""The notification sender: a loop that claims due outbox rows, delivers each through its
channel outside any transaction, and records the outcome (services/evaluator/delivery.py).

The evaluator runs it beside its rounds; any number of senders may run (one per
evaluator replica): a claim hides a row from the others for its lease, so one row is
never sent by two senders at once. A sender that dies between claim and outcome leaves
the row to be sent again when the lease ends: delivery is at least once, and every
request names its notification and event (X-Minisource-Notification-Id,
X-Minisource-Event-Id) so receivers can drop a repeat.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

import httpx
import psycopg
from psycopg_pool import AsyncConnectionPool

from services.evaluator import outbox
from services.evaluator.channels.base import USER_AGENT, Notification, SmtpConfig, Transport
from services.evaluator.delivery import DeliveryPolicy, deliver
from shared.lifecycle import Backoff, sleep_or_stop
from shared.settings import Settings

log = logging.getLogger("evaluator.sender")


async def run_sender(
    settings: Settings,
    pool: AsyncConnectionPool,
    stop: asyncio.Event,
    wake: asyncio.Event,
    *,
    policy: DeliveryPolicy | None = None,
    smtp_tls: ssl.SSLContext | None = None,
) -> None:
    """Deliver due notifications until `stop` is set. `wake` (set after a round recorded
    state changes) makes it look at once instead of at its next poll. On stop, sends in
    flight get `shutdown_grace_seconds` to finish and record their outcome; a send that
    does not finish, or whose outcome cannot be written, is left to its lease."""
    policy = policy or DeliveryPolicy.from_settings(settings)
    # httpx logs every request's full URL at INFO, and a Slack webhook's URL is its
    # credential: its own lines are kept to warnings and above.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Redirects are not followed: a receiver's 3xx is reported, not chased to wherever
    # it points.
    async with httpx.AsyncClient(
        follow_redirects=False, headers={"User-Agent": USER_AGENT}
    ) as http:
        transport = Transport(
            http=http,
            smtp=SmtpConfig.from_settings(settings, smtp_tls),
            deadline_seconds=policy.send_deadline_seconds,
        )
        await _Sender(transport, pool, policy, stop, wake).run()


class _Sender:
    def __init__(
        self,
        transport: Transport,
        pool: AsyncConnectionPool,
        policy: DeliveryPolicy,
        stop: asyncio.Event,
        wake: asyncio.Event,
    ) -> None:
        self._transport = transport
        self._pool = pool
        self._policy = policy
        self._stop = stop
        self._wake = wake
        self._inflight: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        log.info("notification sender started")
        try:
            await self._loop()
            await self._drain()
        finally:
            # Cancelled (or past the grace): what is still in flight is left to its lease.
            # Their unwinding is awaited so that none outlives the HTTP client.
            pending = set(self._inflight)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        log.info("notification sender stopped")

    async def _loop(self) -> None:
        outage = Backoff(cap=self._policy.outage_backoff_cap_seconds)
        paused = False
        while not self._stop.is_set():
            # Cleared before claiming: a wake during the claim is seen by the next wait.
            self._wake.clear()
            free = self._policy.concurrency - len(self._inflight)
            if free > 0:
                try:
                    claimed = await self._claim(free)
                except (psycopg.Error, OSError) as exc:
                    if not paused:
                        log.warning("notification sender paused: PostgreSQL: %s", exc)
                        paused = True
                    await sleep_or_stop(self._stop, outage.next_delay())
                    continue
                if paused:
                    log.info("notification sender resumed")
                    paused = False
                outage.reset()
                for n in claimed:
                    task = asyncio.create_task(
                        deliver(n, self._transport, self._pool, self._policy, self._stop),
                        name=f"notification-{n.id}",
                    )
                    self._inflight.add(task)
                    task.add_done_callback(self._finished)
            await self._wait()

    async def _claim(self, limit: int) -> list[Notification]:
        """Claim up to `limit` rows; nothing when `stop` comes first (a checkout may wait
        the pool's whole timeout while PostgreSQL is away: stopping does not)."""
        claim = asyncio.create_task(outbox.claim(self._pool, limit, self._policy.lease_seconds))
        stopping = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({claim, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not claim.done():
                # Cancelled mid-statement, the claim rolls back; cancelled just after its
                # commit, its rows are left to their lease (at least once, as ever).
                claim.cancel()
                await asyncio.wait({claim})
        return claim.result() if claim.done() and not claim.cancelled() else []

    async def _wait(self) -> None:
        """Until stop, wake, the poll interval, or (all slots busy) a send finishing."""
        waiters = [asyncio.create_task(self._stop.wait()), asyncio.create_task(self._wake.wait())]
        watched: set[asyncio.Task[object]] = set(waiters)
        if len(self._inflight) >= self._policy.concurrency:
            watched |= set(self._inflight)
        try:
            await asyncio.wait(
                watched, timeout=self._policy.poll_seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _drain(self) -> None:
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=self._policy.shutdown_grace_seconds)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # `deliver` records every outcome itself; this is a fault of ours. The row is
            # tried again after its lease.
            log.error("notification delivery crashed", exc_info=exc)
