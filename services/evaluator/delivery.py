"""One try of one claimed notification: send it, then record the outcome (sent, due again
after a backoff, or failed)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import psycopg
from psycopg_pool import AsyncConnectionPool

from services.evaluator import metrics, outbox
from services.evaluator.channels import dispatch
from services.evaluator.channels.base import DeliveryError, Notification, Transport
from shared.lifecycle import Backoff, sleep_or_stop
from shared.logsetup import FIELDS
from shared.settings import Settings

log = logging.getLogger("evaluator.sender")


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How a sender claims and retries. Tests shorten the times; the defaults suit a
    service (the 8 tries of ALERT_MAX_ATTEMPTS=8 span 2 to 4 minutes of backoff)."""

    max_attempts: int = 8
    # A claim hides a row from other senders this long. Every send is cut off at half of
    # it, so a claim is never outlived by its own send.
    lease_seconds: float = 120.0
    # Notifications in flight at once per sender (none holds a database connection
    # while it is sent).
    concurrency: int = 16
    # How often to look for due rows when no round woke the sender.
    poll_seconds: float = 1.0
    # Retry n waits about retry_base * 2**(n-1), jittered, at most retry_cap.
    retry_base_seconds: float = 2.0
    retry_cap_seconds: float = 300.0
    # On stop, sends in flight get this long to finish; the rest are left to their lease.
    shutdown_grace_seconds: float = 5.0
    # Waiting for PostgreSQL after an error (capped exponential backoff with jitter).
    outage_backoff_cap_seconds: float = 5.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryPolicy:
        return cls(max_attempts=settings.alert_max_attempts)

    @property
    def send_deadline_seconds(self) -> float:
        return self.lease_seconds / 2

    def retry_delay(self, attempts: int, retry_after: float | None = None) -> float:
        """Seconds before the next try after `attempts` failed ones: exponential, capped,
        with "equal jitter" (half fixed, half random) so that the retries of many rows
        failing together spread out yet never come back at once. A receiver's
        Retry-After is honoured up to the cap."""
        ceiling = min(self.retry_cap_seconds, self.retry_base_seconds * 2.0 ** (attempts - 1))
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_cap_seconds))
        return delay


async def deliver(
    n: Notification,
    transport: Transport,
    pool: AsyncConnectionPool,
    policy: DeliveryPolicy,
    stop: asyncio.Event,
) -> None:
    """Send `n` (claimed, no transaction open) and record the outcome."""
    fields = {
        "notification_id": str(n.id),
        "event_id": str(n.event_id),
        "tenant_id": str(n.tenant_id),
        "channel": dispatch.channel_type(n),
        "attempt": n.attempts,
    }
    lease_ends = time.monotonic() + policy.lease_seconds
    channel = metrics.channel_label(dispatch.channel_type(n))
    started = time.perf_counter()
    try:
        remark = await dispatch.send(transport, n)
    except DeliveryError as exc:
        error = exc
    except Exception as exc:
        # A fault of ours, not the receiver's: retried like a transient error, logged in
        # full here, and only its kind shown to the tenant.
        log.exception("sending a notification failed unexpectedly", extra={FIELDS: fields})
        error = DeliveryError(f"internal error ({type(exc).__name__})")
    else:
        _attempted(channel, "sent", started)
        if await _record(lambda: outbox.mark_sent(pool, n, remark), stop, lease_ends, fields):
            log.info("notification delivered", extra={FIELDS: fields})
        return

    if error.permanent or n.attempts >= policy.max_attempts:
        _attempted(channel, "failed", started)
        if await _record(
            lambda: outbox.mark_failed(pool, n, error.reason), stop, lease_ends, fields
        ):
            why = "not retried" if error.permanent else f"after {n.attempts} attempts"
            log.error("notification failed (%s): %s", why, error.reason, extra={FIELDS: fields})
        return
    _attempted(channel, "retry", started)
    delay = policy.retry_delay(n.attempts, error.retry_after)
    if await _record(
        lambda: outbox.mark_retry(pool, n, error.reason, delay), stop, lease_ends, fields
    ):
        log.warning(
            "notification not delivered, retry in %.1f s: %s",
            delay,
            error.reason,
            extra={FIELDS: fields},
        )


def _attempted(channel: str, outcome: str, started: float) -> None:
    metrics.NOTIFICATIONS.labels(channel, outcome).inc()
    metrics.NOTIFICATION_DURATION.labels(channel).observe(time.perf_counter() - started)


async def _record(
    update: Callable[[], Awaitable[bool]],
    stop: asyncio.Event,
    lease_ends: float,
    fields: dict[str, object],
) -> bool:
    """Run an outbox update, retrying through a PostgreSQL outage while the claim is
    ours (until its lease would end, or the sender stops). True when it was recorded.
    Not recorded, the row is tried again once its lease runs out: at least once."""
    backoff = Backoff(cap=2.0)
    while True:
        try:
            if await update():
                return True
            log.warning(
                "outcome not recorded: the lease ran out and the row was claimed again",
                extra={FIELDS: fields},
            )
            return False
        except (psycopg.Error, OSError) as exc:
            if stop.is_set() or time.monotonic() >= lease_ends:
                log.warning(
                    "outcome not recorded (%s): the row is tried again after its lease",
                    type(exc).__name__,
                    extra={FIELDS: fields},
                )
                return False
        await sleep_or_stop(stop, backoff.next_delay())
