"""Counting one rule's window, as its tenant and within a time limit."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from shared.alerts import AlertRule, RuleCount, Window, count_rule
from shared.db import tenant_scope
from shared.kept_hours import KeptHours


async def count_window(
    pool: AsyncConnectionPool,
    rule: AlertRule,
    window: Window,
    timeout_ms: int,
    kept: KeptHours | None = None,
) -> RuleCount:
    """The rule's count per group in `window`, read inside the rule's tenant scope (row-
    level security behind the tenant predicate) and bounded like an API query
    (QUERY_TIMEOUT_MS): one rule with a search over a week must not hold a connection
    the other rules wait for."""
    async with tenant_scope(pool, rule.tenant_id, timeout_ms=timeout_ms) as conn:
        return await count_rule(conn, rule, window, kept)
