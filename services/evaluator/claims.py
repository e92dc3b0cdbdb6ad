"""Claiming rules for a tick: how evaluators share the rules and never evaluate one twice.

A claim moves `log_alerts.evaluated_tick` to the tick (named by its start, see
services/evaluator/schedule.py), in its own short transaction, for a batch of enabled,
non-deleted rules still behind it. Rows another evaluator is claiming (or writing) at
that moment are skipped, not waited for (SKIP LOCKED): each evaluator takes what is
left, batch after batch, and a rule is claimed once per tick whatever the number of
evaluators. A claimed rule whose evaluation then fails (the process dies, PostgreSQL
goes away) is simply evaluated again at the next tick.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import msgspec
from psycopg import AsyncConnection

from shared.alerts import RULE_COLUMNS, AlertRule, rule_from_row

# ANY(ARRAY(...)) rather than IN (...): the locking subquery must run exactly once.
_CLAIM_SQL = f"""
UPDATE log_alerts SET evaluated_tick = %(tick)s
 WHERE id = ANY(ARRAY(
       SELECT id FROM log_alerts
        WHERE enabled AND deleted_at IS NULL AND evaluated_tick < %(tick)s
        ORDER BY evaluated_tick
        LIMIT %(limit)s
          FOR UPDATE SKIP LOCKED))
RETURNING {RULE_COLUMNS}
"""


@dataclass
class Claim:
    """The rules claimed by one batch, and those whose stored row does not make a rule
    (written around the API): reported on the rule, never allowed to stop a round."""

    rules: list[AlertRule] = field(default_factory=list)
    unreadable: list[tuple[uuid.UUID, uuid.UUID, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rules) + len(self.unreadable)


async def claim_rules(conn: AsyncConnection[Any], tick: int, limit: int) -> Claim:
    """Claim up to `limit` rules not yet evaluated for `tick` (the rules behind the most
    ticks first) and commit the claim. Empty when none is left."""
    async with conn.transaction():
        cur = await conn.execute(_CLAIM_SQL, {"tick": tick, "limit": limit})
        rows = await cur.fetchall()
    claim = Claim()
    for row in rows:
        try:
            claim.rules.append(rule_from_row(row))
        except (msgspec.ValidationError, TypeError, ValueError) as exc:
            claim.unreadable.append((row[0], row[1], str(exc)))
    return claim
