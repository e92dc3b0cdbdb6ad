"""Writing one evaluation of one rule: states, events, outbox and last evaluation, in ONE
transaction.

The rule's row is locked first, then its states (the API's disable/delete/PUT take the
same locks in the same order, so they serialise with an evaluation instead of
deadlocking). Under the lock the rule must still be the one that was counted: enabled,
not deleted, its definition unchanged, and its claim still this tick. Otherwise nothing
is written and the next tick evaluates what the rule has become. Each state change
records its event and one outbox row per channel (shared/alert_events.py) in the same
transaction as the new state, so a notification exists exactly when the change does.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from services.evaluator.state_machine import GroupState, Transition, decide
from shared.alert_events import EventKind, StateChange, record_change
from shared.alerts import RULE_COLUMNS, AlertRule, GroupKey, RuleCount, rule_from_row

# last_evaluation lists at most this many groups (firing ones first): a rule grouped by
# host must not rewrite a huge document every tick.
MAX_REPORTED_GROUPS = 100

_LOCK_RULE_SQL = f"""
SELECT {RULE_COLUMNS}, enabled, deleted_at IS NULL, evaluated_tick
  FROM log_alerts WHERE id = %s AND tenant_id = %s FOR UPDATE
"""
_STATES_SQL = """
SELECT group_key, state, since, last_count, open_event_id, last_fired_at
  FROM alert_states WHERE alert_id = %s AND tenant_id = %s FOR UPDATE
"""
_UPSERT_STATE_SQL = """
INSERT INTO alert_states (alert_id, group_key, tenant_id, state, since, last_count,
    open_event_id, last_fired_at, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now())
ON CONFLICT (alert_id, group_key) DO UPDATE SET
    state = EXCLUDED.state, since = EXCLUDED.since, last_count = EXCLUDED.last_count,
    open_event_id = EXCLUDED.open_event_id, last_fired_at = EXCLUDED.last_fired_at,
    updated_at = now()
"""
_DELETE_STATE_SQL = """
DELETE FROM alert_states WHERE alert_id = %s AND tenant_id = %s AND group_key = %s
"""
_LAST_EVALUATION_SQL = """
UPDATE log_alerts SET last_evaluation = %s, last_triggered = coalesce(%s, last_triggered)
 WHERE id = %s AND tenant_id = %s
"""
_FAILED_EVALUATION_SQL = """
UPDATE log_alerts SET last_evaluation = %s
 WHERE id = %s AND tenant_id = %s AND evaluated_tick = %s AND enabled AND deleted_at IS NULL
"""


@dataclass(frozen=True, slots=True)
class RecordedChange:
    """A state change written with its event."""

    rule: AlertRule
    group: GroupKey
    kind: EventKind
    count: int
    event_id: uuid.UUID
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one evaluation wrote; `skipped` says why it wrote nothing."""

    rule: AlertRule
    changes: list[RecordedChange]
    skipped: str | None = None


@dataclass(frozen=True, slots=True)
class Observation:
    """What one evaluation saw: its window's counts, at which watermark and tick."""

    counted: RuleCount
    watermark: datetime
    now: datetime
    tick: int


async def store_outcome(
    conn: AsyncConnection[Any], rule: AlertRule, seen: Observation, public_url: str
) -> Outcome:
    """Decide and write the rule's transitions in one transaction on `conn` (a plain
    connection: alert_states and the outbox are written as the service, every statement
    keyed by the rule and its tenant)."""
    async with conn.transaction():
        skipped = await _lock_rule(conn, rule, seen.tick)
        if skipped:
            return Outcome(rule, [], skipped)
        cur = await conn.execute(_STATES_SQL, (rule.id, rule.tenant_id))
        stored = [
            (group, GroupState(state, since, int(n), event, fired))
            for group, state, since, n, event, fired in await cur.fetchall()
        ]
        transitions = decide(rule, seen.counted, stored, seen.now)
        if not any(t.change for t in transitions):
            # Most evaluations change no state: they only refresh counts and the report.
            # Losing one in a PostgreSQL crash costs nothing (the next tick writes it
            # again), so its COMMIT need not wait for the WAL flush (measured here:
            # ~2 ms of such a write's ~2.5). A state change (its event and outbox rows)
            # keeps the full guarantee: its notification may be sent once committed.
            await conn.execute("SET LOCAL synchronous_commit = off")
        changes: list[RecordedChange] = []
        written: list[Transition] = []
        for t in transitions:
            if t.change is not None:
                event_id = await record_change(conn, _state_change(rule, t, seen), public_url)
                changes.append(RecordedChange(rule, t.group, t.change, t.count, event_id, t.reason))
                if t.change == "firing" and t.after is not None:
                    t = replace(t, after=replace(t.after, open_event_id=event_id))
            written.append(t)
        await _write_states(conn, rule, written)
        fired = any(c.kind == "firing" for c in changes)
        await conn.execute(
            _LAST_EVALUATION_SQL,
            (
                Jsonb(last_evaluation(seen, written)),
                seen.now if fired else None,
                rule.id,
                rule.tenant_id,
            ),
        )
    return Outcome(rule, changes)


async def record_failure(
    conn: AsyncConnection[Any],
    rule_id: uuid.UUID,
    tenant_id: uuid.UUID,
    tick: int,
    now: datetime,
    message: str,
) -> None:
    """Show, in the rule's last evaluation, that this tick could not evaluate it; its
    states stay as they were."""
    report = {"at": now.isoformat(), "tick": tick, "error": message}
    async with conn.transaction():
        await conn.execute(_FAILED_EVALUATION_SQL, (Jsonb(report), rule_id, tenant_id, tick))


async def _lock_rule(conn: AsyncConnection[Any], rule: AlertRule, tick: int) -> str | None:
    """Lock the rule's row; why its evaluation must not be written, or None."""
    cur = await conn.execute(_LOCK_RULE_SQL, (rule.id, rule.tenant_id))
    row = await cur.fetchone()
    if row is None:
        return "gone"
    *columns, enabled, alive, claimed_tick = row
    if not alive:
        return "deleted"
    if not enabled:
        return "disabled"
    if claimed_tick != tick:
        # A later tick claimed it while this (slow) evaluation ran: its view is newer.
        return "claimed by a later tick"
    if rule_from_row(tuple(columns)) != rule:
        return "changed since it was counted"
    return None


def _state_change(rule: AlertRule, t: Transition, seen: Observation) -> StateChange:
    window = seen.counted.window
    if t.change == "firing":
        return StateChange(rule, t.group, "firing", t.count, window, started_at=window.end)
    assert t.before is not None
    return StateChange(
        rule,
        t.group,
        "resolved",
        t.count,
        window,
        started_at=t.before.since,
        resolved_at=window.end,
        reason=t.reason,
    )


async def _write_states(
    conn: AsyncConnection[Any], rule: AlertRule, transitions: list[Transition]
) -> None:
    kept = [
        (
            rule.id,
            Jsonb(t.group),
            rule.tenant_id,
            t.after.state,
            t.after.since,
            t.after.last_count,
            t.after.open_event_id,
            t.after.last_fired_at,
        )
        for t in transitions
        if t.after is not None and t.after != t.before
    ]
    gone = [
        (rule.id, rule.tenant_id, Jsonb(t.group))
        for t in transitions
        if t.after is None and t.before is not None
    ]
    async with conn.cursor() as cur:
        if kept:
            await cur.executemany(_UPSERT_STATE_SQL, kept)
        if gone:
            await cur.executemany(_DELETE_STATE_SQL, gone)


def last_evaluation(seen: Observation, transitions: list[Transition]) -> dict[str, Any]:
    """The jsonb shown when the rule is read: the window, what was counted per group and
    the state each group is in now."""
    window = seen.counted.window
    reported = sorted(
        (t for t in transitions if t.after is not None or t.change is not None),
        key=lambda t: (t.after is None or t.after.state != "firing", -t.count),
    )
    return {
        "at": seen.now.isoformat(),
        "tick": seen.tick,
        "window_start": window.start.isoformat(),
        "window_end": window.end.isoformat(),
        "watermark": seen.watermark.isoformat(),
        "from_rollups": seen.counted.from_rollups,
        "groups": [
            {
                "group": t.group,
                "count": t.count,
                "state": t.after.state if t.after is not None else "ok",
                "fires": t.fires,
            }
            for t in reported[:MAX_REPORTED_GROUPS]
        ],
        "groups_total": len(reported),
    }
