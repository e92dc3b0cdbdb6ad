"""The notification outbox (alert_notifications, sql/0009): claiming due rows for a
sender and recording what became of each.

A claim is a lease: `claimed_until` in the future hides the row from other senders, and
`attempts` goes up by one. The new `attempts` is the claim's fencing token: an outcome is
recorded only `WHERE attempts = <the claim's>`, so a sender whose lease ran out and whose
row was claimed again cannot overwrite the newer claim's outcome.
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool

from services.evaluator.channels.base import Notification

# A row is due when its time has come, no live claim holds it, and no older notification
# of the same rule and group to the same channel is still pending: one destination hears
# of one group's changes in order (never `resolved` before the `firing` it ends, which
# Alertmanager would take as a new alert), a newer one waiting while an older is retried.
# MATERIALIZED: the locked, limited set is computed once, whatever plan the UPDATE gets.
# SKIP LOCKED: a row another sender is claiming right now is left to it, not waited for;
# once that claim commits, its lease hides the row (FOR UPDATE re-checks the conditions
# on the committed row).
_CLAIM = """
WITH due AS MATERIALIZED (
    SELECT n.id FROM alert_notifications n
     WHERE n.status = 'pending' AND n.next_attempt_at <= now()
       AND (n.claimed_until IS NULL OR n.claimed_until < now())
       AND NOT EXISTS (
           SELECT FROM alert_notifications o
            WHERE o.status = 'pending' AND o.alert_id = n.alert_id
              AND o.payload -> 'group' = n.payload -> 'group' AND o.channel = n.channel
              AND (o.created_at, o.id) < (n.created_at, n.id))
     ORDER BY n.next_attempt_at
     LIMIT %(limit)s
       FOR UPDATE OF n SKIP LOCKED
)
UPDATE alert_notifications n
   SET claimed_until = now() + make_interval(secs => %(lease)s), attempts = n.attempts + 1
  FROM due
 WHERE n.id = due.id
RETURNING n.id, n.event_id, n.tenant_id, n.attempts, n.channel, n.payload
"""

_FENCE = "WHERE id = %(id)s AND attempts = %(attempts)s AND status = 'pending'"

# A sent row keeps the error of an earlier try (or gets the channel's remark, such as
# recipients an SMTP relay refused): it tells why it took several tries.
_SENT = f"""
UPDATE alert_notifications
   SET status = 'sent', sent_at = now(), claimed_until = NULL,
       last_error = coalesce(%(remark)s, last_error)
 {_FENCE}
"""
_RETRY = f"""
UPDATE alert_notifications
   SET last_error = %(error)s, claimed_until = NULL,
       next_attempt_at = now() + make_interval(secs => %(delay)s)
 {_FENCE}
"""
_FAILED = f"""
UPDATE alert_notifications
   SET status = 'failed', last_error = %(error)s, claimed_until = NULL
 {_FENCE}
"""


async def claim(pool: AsyncConnectionPool, limit: int, lease_seconds: float) -> list[Notification]:
    """Claim up to `limit` due notifications, oldest due first, for `lease_seconds`."""
    async with pool.connection() as conn:
        cur = await conn.execute(_CLAIM, {"limit": limit, "lease": lease_seconds})
        rows = await cur.fetchall()
    return [_notification(row) for row in rows]


def _notification(row: tuple[Any, ...]) -> Notification:
    row_id, event_id, tenant_id, attempts, channel, payload = row
    return Notification(row_id, event_id, tenant_id, int(attempts), channel, payload)


async def mark_sent(pool: AsyncConnectionPool, n: Notification, remark: str | None) -> bool:
    """Record the delivery. False: the claim was lost (the lease ran out and another
    sender claimed the row), and that sender records the outcome."""
    return await _update(pool, _SENT, n, remark=remark)


async def mark_retry(
    pool: AsyncConnectionPool, n: Notification, error: str, delay_seconds: float
) -> bool:
    """Record a failed try; the row is due again after `delay_seconds`."""
    return await _update(pool, _RETRY, n, error=error, delay=delay_seconds)


async def mark_failed(pool: AsyncConnectionPool, n: Notification, error: str) -> bool:
    """Record that the notification will not be delivered (a refusal, or the last try)."""
    return await _update(pool, _FAILED, n, error=error)


async def _update(pool: AsyncConnectionPool, query: str, n: Notification, **values: Any) -> bool:
    async with pool.connection() as conn:
        cur = await conn.execute(query, {"id": n.id, "attempts": n.attempts, **values})
        return cur.rowcount == 1
