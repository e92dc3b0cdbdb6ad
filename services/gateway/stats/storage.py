"""Storage use: the caller's tenant against its quota, and every tenant for admins."""

from __future__ import annotations

import uuid

from services.gateway.query.guard import QueryGuard
from services.gateway.stats.models import AllTenantsOut, StorageOut, TenantUsageOut
from shared import rollups


async def compute_storage(
    guard: QueryGuard, tenant_id: uuid.UUID, default_quota_gb: float, *, all_tenants: bool
) -> StorageOut:
    async with guard.read(tenant_id) as conn:
        usage = await rollups.tenant_usage(conn, tenant_id)
        quota = await rollups.tenant_quota(conn, tenant_id, default_quota_gb)
    everyone = None
    if all_tenants:
        # Crosses tenants on purpose (admin only): outside the tenant-scoped transaction,
        # whose row-level security would hide the other tenants; still bounded in time.
        async with guard.read_all_tenants() as conn:
            tenants = await rollups.all_tenants_usage(conn)
            disk = await rollups.physical_size(conn)
        rows = sum(t.rows for t in tenants)
        total = disk.table_bytes + disk.index_bytes
        everyone = AllTenantsOut(
            tenants=[TenantUsageOut(t.tenant_id, t.rows, t.bytes) for t in tenants],
            rows=rows,
            bytes=sum(t.bytes for t in tenants),
            table_bytes=disk.table_bytes,
            index_bytes=disk.index_bytes,
            total_bytes=total,
            bytes_per_row=round(total / rows, 1) if rows else None,
        )
    return StorageOut(
        tenant_id=tenant_id,
        rows=usage.rows,
        bytes=usage.bytes,
        quota_bytes=quota.bytes,
        quota_used=usage.bytes / quota.bytes if quota.bytes else 0.0,
        quota_scope=quota.scope,
        all_tenants=everyone,
    )
