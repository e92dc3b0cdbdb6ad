"""Size quotas: each tenant's bytes per UTC day, from the rollups, and which tenant-days
go, oldest first, to bring a tenant (max_size_gb) or everyone (LOG_MAX_SIZE_GB) under
its quota.

Bytes are the storage figure of GET /api/v1/logs/storage: per row, the UTF-8 bytes of
its text fields and its metadata's JSON text plus ENTRY_FIXED_BYTES (shared/model.py),
summed per minute by the writer into log_counts. Not the bytes on disk: those depend on
indexes, TOAST compression and dead tuples, and cannot be attributed to a tenant.

The day being written (the UTC day of the run's clock) and days after it are never
chosen: their rows are still arriving, and the quota is met from the closed days alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

import psycopg

# All time, as shared/rollups.py counts storage: the daily cells hold every minute before
# the rollup watermark, log_counts the minutes from it on. One statement, one snapshot:
# compaction moves minutes and the watermark in one transaction.
_USAGE_SQL = """
SELECT day, sum(count), sum(bytes) FROM (
    SELECT (day AT TIME ZONE 'UTC')::date AS day, count, bytes
    FROM log_counts_daily WHERE tenant_id = %(tenant)s
    UNION ALL
    SELECT (minute AT TIME ZONE 'UTC')::date, count, bytes
    FROM log_counts
    WHERE tenant_id = %(tenant)s AND minute >= (SELECT compacted_until FROM rollup_watermark)
) AS cells
GROUP BY 1 HAVING sum(count) > 0 ORDER BY 1
"""


@dataclass(frozen=True, slots=True)
class DayUsage:
    tenant_id: uuid.UUID
    day: date
    rows: int
    bytes: int


def usage_by_day(conn: psycopg.Connection, tenant_id: uuid.UUID) -> list[DayUsage]:
    """The tenant's rows and bytes per UTC day, oldest first."""
    rows = conn.execute(_USAGE_SQL, {"tenant": tenant_id}, prepare=False).fetchall()
    return [DayUsage(tenant_id, d, int(n), int(b)) for d, n, b in rows]


def oldest_first_until_under(
    days: Iterable[DayUsage], total: int, quota: int, today: date
) -> list[DayUsage]:
    """The tenant-days to remove, in order, so that `total` falls to `quota` or below:
    `days` must already be in removal order; closed days only."""
    chosen = []
    for usage in days:
        if total <= quota:
            break
        if usage.day >= today:
            continue
        chosen.append(usage)
        total -= usage.bytes
    return chosen


def tenant_plan(days: Sequence[DayUsage], quota: int, today: date) -> list[DayUsage]:
    """A tenant over its max_size_gb loses its oldest days."""
    return oldest_first_until_under(days, sum(d.bytes for d in days), quota, today)


def global_plan(
    usage: Mapping[uuid.UUID, Sequence[DayUsage]], quota: int, today: date
) -> list[DayUsage]:
    """Everyone over LOG_MAX_SIZE_GB: the oldest day across all tenants goes first; of
    tenant-days of the same day, the largest first (it frees the most for the same age)."""
    every = [d for days in usage.values() for d in days]
    order = sorted(every, key=lambda d: (d.day, -d.bytes, d.tenant_id))
    return oldest_first_until_under(order, sum(d.bytes for d in every), quota, today)
