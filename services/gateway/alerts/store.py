"""The SQL of the alert rules API. Every function takes the tenant and puts it in its
WHERE clause (the first wall); callers run reads inside `tenant_scope`, where row-level
security is the second (services/gateway/alerts/rules.py says which transaction runs
where). A deleted rule (deleted_at set) is never listed, read or changed; its events
stay readable."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from psycopg import AsyncConnection, sql
from psycopg.rows import class_row, dict_row
from psycopg.types.json import Jsonb

from services.gateway.alerts.channels import redact, to_column
from services.gateway.alerts.models import (
    AlertEventOut,
    DeliveryOut,
    FiringGroup,
    Group,
    RuleState,
)
from services.gateway.alerts.pages import Keyset, Page
from shared.alerts import (
    AlertRule,
    AlertRuleIn,
    Channel,
    Condition,
    GroupField,
    Severity,
    rule_from_row,
)


@dataclass(frozen=True, slots=True)
class StoredRule:
    """A row of log_alerts as the API reads it (jsonb columns parsed)."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    description: str
    filter: dict[str, Any]
    condition: Condition  # the table's CHECK constraints hold these to their values
    threshold: int
    window_mins: int
    severity: Severity
    channels: list[Any]
    group_by: list[GroupField]  # written only through AlertRuleIn
    cooldown_mins: int
    enabled: bool
    last_triggered: datetime | None
    created_at: datetime
    updated_at: datetime
    last_evaluation: dict[str, Any] | None

    @property
    def keyset(self) -> Keyset:
        return Keyset(self.created_at, self.id)

    def counted(self) -> AlertRule:
        """The rule as the evaluator counts it."""
        return rule_from_row(
            (self.id, self.tenant_id, self.name, self.filter, self.condition, self.threshold,
             self.window_mins, self.severity, self.group_by, self.cooldown_mins)
        )  # fmt: skip


_COLUMN_NAMES = (
    "id", "tenant_id", "name", "description", "filter", "condition", "threshold", "window_mins",
    "severity", "channels", "group_by", "cooldown_mins", "enabled", "last_triggered",
    "created_at", "updated_at", "last_evaluation",
)  # fmt: skip


def _columns(alias: str = "") -> sql.Composed:
    """The columns of StoredRule, in its order (`alias.column` with an alias)."""
    return sql.SQL(", ").join(
        sql.Identifier(alias, name) if alias else sql.Identifier(name) for name in _COLUMN_NAMES
    )


_COLUMNS = _columns()
_ONE = sql.SQL(
    "SELECT {} FROM log_alerts WHERE tenant_id = %s AND id = %s AND deleted_at IS NULL"
).format(_COLUMNS)


def _values(rule: AlertRuleIn, channels: Sequence[Channel]) -> list[Any]:
    """The stored columns of a rule, in the order of _WRITTEN."""
    return [
        rule.name,
        rule.description,
        Jsonb(msgspec.to_builtins(rule.filter)),
        rule.condition,
        rule.threshold,
        rule.window_mins,
        rule.severity,
        Jsonb(to_column(channels)),
        list(rule.group_by),
        rule.cooldown_mins,
        rule.enabled,
    ]


_WRITTEN = (
    "name, description, filter, condition, threshold, window_mins, severity, channels, "
    "group_by, cooldown_mins, enabled"
)


async def insert_rule(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    rule: AlertRuleIn,
    channels: Sequence[Channel],
) -> StoredRule:
    query = sql.SQL(
        "INSERT INTO log_alerts (id, tenant_id, {written}) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING {columns}"
    ).format(written=sql.SQL(_WRITTEN), columns=_COLUMNS)
    return await _one_row(conn, query, [uuid.uuid4(), tenant_id, *_values(rule, channels)])


async def replace_rule(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    alert_id: uuid.UUID,
    rule: AlertRuleIn,
    channels: Sequence[Channel],
) -> StoredRule:
    """Replace every field a client writes; the caller holds the row (lock_rule)."""
    query = sql.SQL(
        "UPDATE log_alerts SET ({written}, updated_at) = "
        "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now()) "
        "WHERE tenant_id = %s AND id = %s AND deleted_at IS NULL RETURNING {columns}"
    ).format(written=sql.SQL(_WRITTEN), columns=_COLUMNS)
    return await _one_row(conn, query, [*_values(rule, channels), tenant_id, alert_id])


async def get_rule(
    conn: AsyncConnection[Any], tenant_id: uuid.UUID, alert_id: uuid.UUID
) -> StoredRule | None:
    cur = conn.cursor(row_factory=class_row(StoredRule))
    await cur.execute(_ONE, (tenant_id, alert_id))
    return await cur.fetchone()


async def lock_rule(
    conn: AsyncConnection[Any], tenant_id: uuid.UUID, alert_id: uuid.UUID
) -> StoredRule | None:
    """The rule, locked until the transaction ends: a change, and the events it records,
    are not interleaved with another change nor with an evaluation (the evaluator locks
    the rule's row, then its states, as this row lock and resolve_open do)."""
    cur = conn.cursor(row_factory=class_row(StoredRule))
    await cur.execute(_ONE + sql.SQL(" FOR UPDATE"), (tenant_id, alert_id))
    return await cur.fetchone()


async def set_enabled(
    conn: AsyncConnection[Any], tenant_id: uuid.UUID, alert_id: uuid.UUID, enabled: bool
) -> StoredRule | None:
    """Set `enabled` (updated_at moves only when it changes); None: no such rule."""
    query = sql.SQL(
        "UPDATE log_alerts SET enabled = %s, "
        "updated_at = CASE WHEN enabled = %s THEN updated_at ELSE now() END "
        "WHERE tenant_id = %s AND id = %s AND deleted_at IS NULL RETURNING {}"
    ).format(_COLUMNS)
    cur = conn.cursor(row_factory=class_row(StoredRule))
    await cur.execute(query, (enabled, enabled, tenant_id, alert_id))
    return await cur.fetchone()


async def mark_deleted(
    conn: AsyncConnection[Any], tenant_id: uuid.UUID, alert_id: uuid.UUID
) -> None:
    await conn.execute(
        "UPDATE log_alerts SET deleted_at = now(), updated_at = now() "
        "WHERE tenant_id = %s AND id = %s AND deleted_at IS NULL",
        (tenant_id, alert_id),
    )


async def forget_states(
    conn: AsyncConnection[Any], tenant_id: uuid.UUID, alert_id: uuid.UUID
) -> None:
    """Drop the rule's per-group states (all `ok` by then): its groups changed shape, or
    the rule is deleted. Events, the history, stay."""
    await conn.execute(
        "DELETE FROM alert_states WHERE tenant_id = %s AND alert_id = %s", (tenant_id, alert_id)
    )


async def list_rules(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    page: Page,
    *,
    enabled: bool | None,
    state: RuleState | None,
) -> list[StoredRule]:
    """A page of rules, oldest first, plus one more when there are more."""
    where: list[sql.Composable] = [sql.SQL("a.tenant_id = %s AND a.deleted_at IS NULL")]
    params: list[Any] = [tenant_id]
    if enabled is not None:
        where.append(sql.SQL("a.enabled = %s"))
        params.append(enabled)
    if state is not None:
        firing = sql.SQL(
            "EXISTS (SELECT FROM alert_states s WHERE s.tenant_id = a.tenant_id "
            "AND s.alert_id = a.id AND s.state = 'firing')"
        )
        where.append(firing if state == "firing" else sql.SQL("NOT ") + firing)
    if page.after is not None:
        where.append(sql.SQL("(a.created_at, a.id) > (%s, %s)"))
        params += [page.after.created_at, page.after.id]
    query = sql.SQL(
        "SELECT {columns} FROM log_alerts a WHERE {where} "
        "ORDER BY a.created_at, a.id LIMIT %s OFFSET %s"
    ).format(
        columns=_columns("a"),
        where=sql.SQL(" AND ").join(where),
    )
    cur = conn.cursor(row_factory=class_row(StoredRule))
    await cur.execute(query, [*params, page.limit + 1, page.offset])
    return await cur.fetchall()


async def firing_groups(
    conn: AsyncConnection[Any], tenant_id: uuid.UUID, alert_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[FiringGroup]]:
    """The firing groups of each rule (rules with none are absent)."""
    cur = await conn.execute(
        "SELECT alert_id, group_key, since, last_count FROM alert_states "
        "WHERE tenant_id = %s AND alert_id = ANY(%s) AND state = 'firing' "
        "ORDER BY alert_id, since, group_key",
        (tenant_id, list(alert_ids)),
    )
    found: dict[uuid.UUID, list[FiringGroup]] = {}
    for alert_id, group, since, last_count in await cur.fetchall():
        found.setdefault(alert_id, []).append(FiringGroup(group, since, int(last_count)))
    return found


async def state_groups(
    conn: AsyncConnection[Any], tenant_id: uuid.UUID, alert_id: uuid.UUID
) -> list[Group]:
    """Every group the rule keeps a state for."""
    cur = await conn.execute(
        "SELECT group_key FROM alert_states WHERE tenant_id = %s AND alert_id = %s",
        (tenant_id, alert_id),
    )
    return [row[0] for row in await cur.fetchall()]


async def rule_ever_existed(
    conn: AsyncConnection[Any], tenant_id: uuid.UUID, alert_id: uuid.UUID
) -> bool:
    """Whether the tenant has or had this rule (deleted rules keep their history)."""
    cur = await conn.execute(
        "SELECT FROM log_alerts WHERE tenant_id = %s AND id = %s", (tenant_id, alert_id)
    )
    return await cur.fetchone() is not None


_EVENT_FIELDS = (
    "id", "alert_id", "kind", "observed_count", "threshold", "condition", "window_mins",
    "window_start", "window_end", "started_at", "resolved_at", "reason", "created_at",
)  # fmt: skip
_EVENT_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, (*_EVENT_FIELDS, "group_key")))


async def list_events(
    conn: AsyncConnection[Any], tenant_id: uuid.UUID, alert_id: uuid.UUID, page: Page
) -> list[AlertEventOut]:
    """A page of the rule's events, newest first (plus one more when there are more),
    each with its deliveries."""
    after = sql.SQL("")
    params: list[Any] = [tenant_id, alert_id]
    if page.after is not None:
        after = sql.SQL(" AND (created_at, id) < (%s, %s)")
        params += [page.after.created_at, page.after.id]
    query = sql.SQL(
        "SELECT {columns} FROM alert_events WHERE tenant_id = %s AND alert_id = %s{after} "
        "ORDER BY created_at DESC, id DESC LIMIT %s OFFSET %s"
    ).format(columns=_EVENT_COLUMNS, after=after)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(query, [*params, page.limit + 1, page.offset])
    rows = await cur.fetchall()
    sent = await _deliveries(conn, tenant_id, [row["id"] for row in rows])
    return [
        AlertEventOut(
            **{name: row[name] for name in _EVENT_FIELDS},
            group=row["group_key"],
            notifications=sent.get(row["id"], []),
        )
        for row in rows
    ]


async def _deliveries(
    conn: AsyncConnection[Any], tenant_id: uuid.UUID, event_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[DeliveryOut]]:
    """Each event's notifications, by channel position: status only, never the channel's
    url or secret (the outbox keeps them; errors are shown with the secret redacted)."""
    if not event_ids:
        return {}
    cur = await conn.execute(
        "SELECT event_id, channel_index, channel->>'type', status, attempts, last_error, "
        "sent_at, channel FROM alert_notifications "
        "WHERE tenant_id = %s AND event_id = ANY(%s) ORDER BY event_id, channel_index",
        (tenant_id, list(event_ids)),
    )
    found: dict[uuid.UUID, list[DeliveryOut]] = {}
    for event_id, index, kind, status, attempts, error, sent_at, channel in await cur.fetchall():
        delivery = DeliveryOut(
            channel_index=index,
            type=kind or "",
            status=status,
            attempts=attempts,
            last_error=redact(error, channel) if error is not None else None,
            sent_at=sent_at,
        )
        found.setdefault(event_id, []).append(delivery)
    return found


async def _one_row(
    conn: AsyncConnection[Any], query: sql.Composed, params: list[Any]
) -> StoredRule:
    cur = conn.cursor(row_factory=class_row(StoredRule))
    await cur.execute(query, params)
    row = await cur.fetchone()
    assert row is not None  # INSERT ... RETURNING, or an UPDATE of a row the caller holds
    return row
