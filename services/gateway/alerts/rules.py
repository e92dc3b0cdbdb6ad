"""The alert rules API's operations, one transaction each, on the caller's tenant.

Reads run in `tenant_scope` (row-level security behind the explicit tenant predicates);
a dry run also goes through the query guard (a slot and the statement timeout), as it
may count raw rows. Creating and enabling a rule write only log_alerts, which the
tenant's role may write: they run in `tenant_scope` too. A change that can end open
alerts (PUT, disable, delete) records `resolved` events and their notifications
(shared.alert_events.resolve_open) in the same transaction as the change; those tables
are not writable by the tenant's role, so such a change runs as the owner, every
statement naming the tenant.

PUT replaces every field and takes effect at the next evaluation. The per-group states
are kept, so the next evaluation compares the new rule's counts with them: a group
still firing under the new rule sends nothing, one that no longer fires is resolved
once, and groups of a former group_by are resolved and dropped (the evaluator's state
machine retires them). Only `enabled: false` ends open alerts at once, as disable does.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import msgspec
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.gateway.alerts import store
from services.gateway.alerts.channels import shown, stored_channels, with_kept_secrets
from services.gateway.alerts.models import (
    AlertPage,
    AlertRuleOut,
    AlertTestOut,
    EventPage,
    FiringGroup,
    GroupCount,
    RuleState,
)
from services.gateway.alerts.pages import Keyset, Page, encode_cursor
from services.gateway.query.guard import QueryGuard
from shared.alert_events import resolve_open
from shared.alerts import AlertRuleIn, GroupKey, Window, check_rule, count_rule
from shared.db import tenant_scope
from shared.errors import NotFound, Unavailable
from shared.filters import LogFilter
from shared.redis_keys import RedisKeys
from shared.streams import committed_watermark


def _not_found(alert_id: uuid.UUID) -> NotFound:
    return NotFound(f"no alert rule {alert_id}")


@asynccontextmanager
async def _as_owner(pool: AsyncConnectionPool) -> AsyncIterator[AsyncConnection[Any]]:
    """A transaction as the tables' owner, for a change that may write the outbox."""
    async with pool.connection() as conn, conn.transaction():
        yield conn


def _out(rule: store.StoredRule, firing: list[FiringGroup]) -> AlertRuleOut:
    return AlertRuleOut(
        id=rule.id,
        tenant_id=rule.tenant_id,
        name=rule.name,
        description=rule.description,
        filter=msgspec.convert(rule.filter, LogFilter),
        condition=rule.condition,
        threshold=rule.threshold,
        window_mins=rule.window_mins,
        severity=rule.severity,
        channels=[shown(c) for c in stored_channels(rule.channels)],
        group_by=rule.group_by,
        cooldown_mins=rule.cooldown_mins,
        enabled=rule.enabled,
        last_triggered=rule.last_triggered,
        created_at=rule.created_at,
        updated_at=rule.updated_at,
        state="firing" if firing else "ok",
        firing_groups=firing,
        last_evaluation=rule.last_evaluation,
    )


async def create_rule(
    pool: AsyncConnectionPool, tenant_id: uuid.UUID, rule: AlertRuleIn
) -> AlertRuleOut:
    check_rule(rule)
    channels = with_kept_secrets(rule.channels, [])
    async with tenant_scope(pool, tenant_id) as conn:
        stored = await store.insert_rule(conn, tenant_id, rule, channels)
    return _out(stored, [])


async def read_rule(
    pool: AsyncConnectionPool, tenant_id: uuid.UUID, alert_id: uuid.UUID
) -> AlertRuleOut:
    async with tenant_scope(pool, tenant_id) as conn:
        stored = await store.get_rule(conn, tenant_id, alert_id)
        if stored is None:
            raise _not_found(alert_id)
        firing = await store.firing_groups(conn, tenant_id, [alert_id])
    return _out(stored, firing.get(alert_id, []))


async def list_rules(
    pool: AsyncConnectionPool,
    tenant_id: uuid.UUID,
    page: Page,
    *,
    enabled: bool | None,
    state: RuleState | None,
) -> AlertPage:
    async with tenant_scope(pool, tenant_id) as conn:
        rows = await store.list_rules(conn, tenant_id, page, enabled=enabled, state=state)
        rows, more = rows[: page.limit], len(rows) > page.limit
        firing = await store.firing_groups(conn, tenant_id, [r.id for r in rows])
    return AlertPage(
        alerts=[_out(r, firing.get(r.id, [])) for r in rows],
        limit=page.limit,
        offset=page.offset,
        has_more=more,
        next_cursor=encode_cursor("rules", rows[-1].keyset) if more else None,
    )


async def replace_rule(
    pool: AsyncConnectionPool,
    tenant_id: uuid.UUID,
    alert_id: uuid.UUID,
    rule: AlertRuleIn,
    public_url: str,
) -> AlertRuleOut:
    check_rule(rule)
    async with _as_owner(pool) as conn:
        old = await store.lock_rule(conn, tenant_id, alert_id)
        if old is None:
            raise _not_found(alert_id)
        channels = with_kept_secrets(rule.channels, stored_channels(old.channels))
        if not rule.enabled:
            # Before the update: the resolved notifications go to the channels that were
            # told of the firing.
            await resolve_open(conn, old.counted(), "rule disabled", _now(), public_url)
        new = await store.replace_rule(conn, tenant_id, alert_id, rule, channels)
        firing = await store.firing_groups(conn, tenant_id, [alert_id])
    return _out(new, firing.get(alert_id, []))


async def enable_rule(
    pool: AsyncConnectionPool, tenant_id: uuid.UUID, alert_id: uuid.UUID
) -> AlertRuleOut:
    async with tenant_scope(pool, tenant_id) as conn:
        stored = await store.set_enabled(conn, tenant_id, alert_id, True)
        if stored is None:
            raise _not_found(alert_id)
        firing = await store.firing_groups(conn, tenant_id, [alert_id])
    return _out(stored, firing.get(alert_id, []))


async def disable_rule(
    pool: AsyncConnectionPool, tenant_id: uuid.UUID, alert_id: uuid.UUID, public_url: str
) -> AlertRuleOut:
    async with _as_owner(pool) as conn:
        old = await store.lock_rule(conn, tenant_id, alert_id)
        if old is None:
            raise _not_found(alert_id)
        await resolve_open(conn, old.counted(), "rule disabled", _now(), public_url)
        stored = await store.set_enabled(conn, tenant_id, alert_id, False)
        assert stored is not None  # locked above
    return _out(stored, [])


async def delete_rule(
    pool: AsyncConnectionPool, tenant_id: uuid.UUID, alert_id: uuid.UUID, public_url: str
) -> None:
    """Resolve its open alerts, drop its states, mark it deleted; its events stay."""
    async with _as_owner(pool) as conn:
        old = await store.lock_rule(conn, tenant_id, alert_id)
        if old is None:
            raise _not_found(alert_id)
        await resolve_open(conn, old.counted(), "rule deleted", _now(), public_url)
        await store.forget_states(conn, tenant_id, alert_id)
        await store.mark_deleted(conn, tenant_id, alert_id)


async def list_events(
    pool: AsyncConnectionPool, tenant_id: uuid.UUID, alert_id: uuid.UUID, page: Page
) -> EventPage:
    async with tenant_scope(pool, tenant_id) as conn:
        if not await store.rule_ever_existed(conn, tenant_id, alert_id):
            raise _not_found(alert_id)
        events = await store.list_events(conn, tenant_id, alert_id, page)
    events, more = events[: page.limit], len(events) > page.limit
    last = events[-1] if events else None
    return EventPage(
        events=events,
        limit=page.limit,
        offset=page.offset,
        has_more=more,
        next_cursor=encode_cursor("events", Keyset(last.created_at, last.id))
        if more and last
        else None,
    )


async def dry_run(
    guard: QueryGuard,
    redis: Redis,
    keys: RedisKeys,
    tenant_id: uuid.UUID,
    alert_id: uuid.UUID,
) -> AlertTestOut:
    """Count the rule now, as the evaluator would, changing nothing: over `window_mins`
    ending at the committed watermark, per group (the counted ones, and those with a
    state of the rule's current group_by, which the evaluator looks at too)."""
    try:
        watermark = await committed_watermark(redis, keys, _now())
    except RedisError:
        raise Unavailable(
            "the ingest queue (Redis) is unreachable, so the committed watermark that "
            "ends the window is unknown; retry shortly",
            retry_after=2,
        ) from None
    async with guard.read(tenant_id) as conn:
        stored = await store.get_rule(conn, tenant_id, alert_id)
        if stored is None:
            raise _not_found(alert_id)
        rule = stored.counted()
        window = Window.ending_at(watermark, rule.window_mins)
        counted = await count_rule(conn, rule, window)
        known = await store.state_groups(conn, tenant_id, alert_id)
    groups: dict[str, tuple[GroupKey, int]] = {_canonical(g): (g, n) for g, n in counted.groups}
    if not rule.group_by:
        groups.setdefault(_canonical({}), ({}, 0))
    for group in known:
        if set(group) == set(rule.group_by):
            groups.setdefault(_canonical(group), (group, 0))
    out = [GroupCount(g, n, rule.fires(n)) for g, n in (groups[k] for k in sorted(groups))]
    return AlertTestOut(
        alert_id=alert_id,
        condition=rule.condition,
        threshold=rule.threshold,
        window_start=window.start,
        window_end=window.end,
        watermark=watermark,
        from_rollups=counted.from_rollups,
        would_fire=any(g.would_fire for g in out),
        groups=out,
    )


def _canonical(group: GroupKey) -> str:
    """Equal exactly when the groups are, key order aside (as jsonb equality is)."""
    return msgspec.json.encode(group, order="sorted").decode()


def _now() -> datetime:
    return datetime.now(UTC)
