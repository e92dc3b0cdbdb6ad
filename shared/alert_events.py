"""Recording an alert's state change: the event, the new state and one outbox row per
channel, written together inside the caller's transaction.

The evaluator records `firing` and `resolved` as counts cross the threshold; the gateway
records `resolved` when a rule with open alerts is disabled or deleted (so pagers clear).
Because the outbox rows are written in the same transaction as the state change, a
notification exists exactly when the change does: a crash before COMMIT leaves neither,
after COMMIT both (the sender delivers it, at least once).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlencode

import msgspec
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from shared.alerts import AlertRule, GroupKey, Window

EventKind = Literal["firing", "resolved"]
PAYLOAD_VERSION = "1"


@dataclass(frozen=True, slots=True)
class StateChange:
    """One group of one rule changing state."""

    rule: AlertRule
    group: GroupKey
    kind: EventKind
    observed_count: int
    window: Window
    started_at: datetime  # when the group began firing
    resolved_at: datetime | None = None
    reason: str = ""


def query_link(public_url: str, rule: AlertRule, group: GroupKey, window: Window) -> str:
    """A link to the entries the rule counted (GET /api/v1/logs with its filter, its
    group's values and its window), for people reading a notification."""
    params: dict[str, Any] = {
        k: v for k, v in msgspec.to_builtins(rule.filter).items() if isinstance(v, str)
    }
    for name, value in group.items():
        if value is not None:
            params["service_name" if name == "service_name" else name] = value
    params["start_time"] = window.start.isoformat().replace("+00:00", "Z")
    params["end_time"] = window.end.isoformat().replace("+00:00", "Z")
    return f"{public_url.rstrip('/')}/api/v1/logs?{urlencode(params)}"


def payload(change: StateChange, event_id: uuid.UUID, public_url: str) -> dict[str, Any]:
    """The notification's content, the same for every channel (each renders it its own
    way; the generic webhook sends it as is)."""
    rule = change.rule
    return {
        "version": PAYLOAD_VERSION,
        "event_id": str(event_id),
        "status": change.kind,
        "tenant_id": str(rule.tenant_id),
        "alert": {
            "id": str(rule.id),
            "name": rule.name,
            "severity": rule.severity,
            "condition": rule.condition,
            "threshold": rule.threshold,
            "window_mins": rule.window_mins,
            "filter": msgspec.to_builtins(rule.filter),
        },
        "group": change.group,
        "observed_count": change.observed_count,
        "window_start": change.window.start.isoformat(),
        "window_end": change.window.end.isoformat(),
        "started_at": change.started_at.isoformat(),
        "resolved_at": change.resolved_at.isoformat() if change.resolved_at else None,
        "reason": change.reason,
        "link": query_link(public_url, rule, change.group, change.window),
    }


_EVENT_SQL = """
INSERT INTO alert_events (id, tenant_id, alert_id, group_key, kind, observed_count,
    threshold, condition, window_mins, window_start, window_end, started_at, resolved_at,
    reason)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""
_OUTBOX_SQL = """
INSERT INTO alert_notifications (id, tenant_id, alert_id, event_id, channel_index,
    channel, payload)
SELECT gen_random_uuid(), %s, %s, %s, c.ordinality - 1, c.value, %s
FROM log_alerts a, jsonb_array_elements(a.channels) WITH ORDINALITY AS c(value, ordinality)
WHERE a.id = %s
"""


async def record_change(
    conn: AsyncConnection[Any], change: StateChange, public_url: str
) -> uuid.UUID:
    """Insert the event and its outbox rows (one per channel of the rule as stored now,
    secrets included) in the caller's transaction. Returns the event id. The caller
    updates alert_states in the same transaction."""
    rule = change.rule
    event_id = uuid.uuid4()
    await conn.execute(
        _EVENT_SQL,
        (
            event_id,
            rule.tenant_id,
            rule.id,
            Jsonb(change.group),
            change.kind,
            change.observed_count,
            rule.threshold,
            rule.condition,
            rule.window_mins,
            change.window.start,
            change.window.end,
            change.started_at,
            change.resolved_at,
            change.reason,
        ),
    )
    await conn.execute(
        _OUTBOX_SQL,
        (rule.tenant_id, rule.id, event_id, Jsonb(payload(change, event_id, public_url)), rule.id),
    )
    return event_id


async def resolve_open(
    conn: AsyncConnection[Any], rule: AlertRule, reason: str, now: datetime, public_url: str
) -> int:
    """Resolve every firing group of `rule` (it is being disabled or deleted), recording
    each change as the evaluator would. Returns how many were resolved."""
    cur = await conn.execute(
        "SELECT group_key, since, last_count FROM alert_states "
        "WHERE alert_id = %s AND state = 'firing' ORDER BY group_key FOR UPDATE",
        (rule.id,),
    )
    rows = await cur.fetchall()
    window = Window.ending_at(now, rule.window_mins)
    for group, since, last_count in rows:
        change = StateChange(rule, group, "resolved", int(last_count), window, since, now, reason)
        await record_change(conn, change, public_url)
    await conn.execute(
        "UPDATE alert_states SET state = 'ok', since = %s, open_event_id = NULL, "
        "updated_at = now() WHERE alert_id = %s AND state = 'firing'",
        (now, rule.id),
    )
    return len(rows)
