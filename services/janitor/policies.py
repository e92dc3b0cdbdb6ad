"""The policies the janitor applies: every tenant's, the defaults, the longest in force,
and the tenants that have logs at all."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import psycopg

from shared.retention import EffectivePolicy, retention_cutoff
from shared.settings import Settings

_POLICIES_SQL = """
SELECT tenant_id, retention_days, max_size_gb, archive_enabled, archive_path
FROM log_retention_policies
"""

# A loose index scan over a table whose index leads with tenant_id (log_counts' primary
# key): one index probe per tenant instead of reading every cell.
_LOOSE_SCAN = """
    WITH RECURSIVE t AS (
        (SELECT tenant_id FROM {table} ORDER BY tenant_id LIMIT 1)
        UNION ALL
        SELECT (SELECT c.tenant_id FROM {table} c WHERE c.tenant_id > t.tenant_id
                ORDER BY c.tenant_id LIMIT 1)
        FROM t WHERE t.tenant_id IS NOT NULL
    )
    SELECT tenant_id FROM t WHERE tenant_id IS NOT NULL
"""


def tenants_in_sql(table: str) -> str:
    """A query of every tenant_id in `table` (a fixed name; its index leads with it)."""
    return _LOOSE_SCAN.format(table=table)


# Every stored row has its cell, written in the same transaction
# (services/writer/store.py), so log_counts finds every tenant with logs; closed days'
# cells may be packed (services/janitor/count_packing.py): log_counts_packed finds those.
_TENANTS_SQL = (
    f"({tenants_in_sql('log_counts')}) UNION ({tenants_in_sql('log_counts_packed')}) ORDER BY 1"
)


@dataclass(frozen=True, slots=True)
class Policies:
    """Every tenant's policy in force at one moment of a run."""

    own: dict[uuid.UUID, EffectivePolicy]
    settings: Settings

    def of(self, tenant_id: uuid.UUID) -> EffectivePolicy:
        return self.own.get(tenant_id) or EffectivePolicy.default(tenant_id, self.settings)

    @property
    def longest_days(self) -> int:
        """The longest retention in force: tenants without a policy keep the default."""
        return max(
            [self.settings.log_retention_days, *(p.retention_days for p in self.own.values())]
        )

    def drop_before(self, now: datetime) -> datetime:
        """Whole partitions ending at or before this are past every tenant's window."""
        return retention_cutoff(now, self.longest_days)


def load_policies(conn: psycopg.Connection, settings: Settings) -> Policies:
    own = {
        tenant: EffectivePolicy(
            tenant_id=tenant,
            retention_days=int(days),
            max_size_gb=float(gb) if gb is not None else None,
            archive_enabled=bool(archive),
            archive_path=path,
            is_default=False,
        )
        for tenant, days, gb, archive, path in conn.execute(_POLICIES_SQL).fetchall()
    }
    return Policies(own, settings)


def tenants_with_logs(conn: psycopg.Connection) -> list[uuid.UUID]:
    return [row[0] for row in conn.execute(_TENANTS_SQL).fetchall()]
