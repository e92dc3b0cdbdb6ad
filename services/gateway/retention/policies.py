"""The retention policies API's operations, one transaction each, within the caller's
reach (access.py).

A tenant's reads run in `tenant_scope` (row-level security behind the explicit tenant
predicates); the operator's, which span tenants, as the owner. Every change runs as the
owner, every statement naming the tenant or the reach, because it records itself in the
admin audit trail (`retention.create`, `retention.replace`, `retention.delete`) in the
same transaction, which the tenant's role may not write: a change that shortens what is
kept is an operator-visible act. A refusal raises before anything is written, or inside
the transaction, which then rolls back.

The janitor reads the policies at each run (RETENTION_INTERVAL): a change takes effect
at the next run, never mid-run.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from services.gateway.admin.audit import Actor, record_audit
from services.gateway.retention import store
from services.gateway.retention.access import Reach, require_reach, tenant_named
from services.gateway.retention.models import (
    EffectivePolicyOut,
    PolicyPage,
    RetentionPolicyOut,
)
from shared.db import tenant_scope
from shared.errors import Conflict, FieldError, NotFound, ValidationFailed
from shared.retention import EffectivePolicy, RetentionPolicyIn, check_archive_path
from shared.settings import Settings

# max_size_gb is numeric(12, 3): anything smaller would be stored as 0, which the
# table's CHECK refuses.
MIN_SIZE_GB = 0.001


def _not_found(policy_id: uuid.UUID) -> NotFound:
    return NotFound(f"no retention policy {policy_id}")


@asynccontextmanager
async def _reading(pool: AsyncConnectionPool, reach: Reach) -> AsyncIterator[AsyncConnection[Any]]:
    """A read transaction: the tenant's own under row-level security, or the owner's for
    the operator."""
    if reach.tenant_id is not None:
        async with tenant_scope(pool, reach.tenant_id) as conn:
            yield conn
        return
    async with pool.connection() as conn, conn.transaction():
        yield conn


@asynccontextmanager
async def _as_owner(pool: AsyncConnectionPool) -> AsyncIterator[AsyncConnection[Any]]:
    """A transaction as the tables' owner, for a change and its audit record."""
    async with pool.connection() as conn, conn.transaction():
        yield conn


def checked_archive_path(policy: RetentionPolicyIn) -> str | None:
    """What JSON Schema cannot say: the archive path's shape, and the smallest size the
    column keeps. ValidationFailed naming the field."""
    if policy.max_size_gb is not None and policy.max_size_gb < MIN_SIZE_GB:
        raise ValidationFailed(
            f"max_size_gb must be at least {MIN_SIZE_GB}",
            errors=[FieldError("max_size_gb", f"at least {MIN_SIZE_GB} (1 MB), or null")],
        )
    return check_archive_path(policy.archive_path, policy.archive_enabled)


def _out(row: store.StoredPolicy) -> RetentionPolicyOut:
    return RetentionPolicyOut(
        id=row.id,
        tenant_id=row.tenant_id,
        retention_days=row.retention_days,
        max_size_gb=float(row.max_size_gb) if row.max_size_gb is not None else None,
        archive_enabled=row.archive_enabled,
        archive_path=row.archive_path,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _audited(row: store.StoredPolicy) -> dict[str, Any]:
    return {
        "retention_days": row.retention_days,
        "max_size_gb": float(row.max_size_gb) if row.max_size_gb is not None else None,
        "archive_enabled": row.archive_enabled,
        "archive_path": row.archive_path,
    }


async def create_policy(
    pool: AsyncConnectionPool, reach: Reach, actor: Actor, policy: RetentionPolicyIn
) -> RetentionPolicyOut:
    tenant_id = tenant_named(reach, policy.tenant_id)
    archive_path = checked_archive_path(policy)
    async with _as_owner(pool) as conn:
        if not await store.tenant_exists(conn, tenant_id):
            raise NotFound(f"no tenant {tenant_id}")
        row = await store.insert_policy(conn, tenant_id, policy, archive_path)
        if row is None:
            existing = await store.policy_of(conn, tenant_id)
            raise Conflict(
                f"tenant {tenant_id} has a retention policy already (one per tenant): "
                "replace it with PUT /api/v1/retention/<policy_id>",
                extra={"policy_id": str(existing.id)} if existing else None,
            )
        await record_audit(
            conn,
            actor,
            "retention.create",
            tenant_id=tenant_id,
            target_id=str(row.id),
            details=_audited(row),
        )
    return _out(row)


async def list_policies(
    pool: AsyncConnectionPool, reach: Reach, *, limit: int, offset: int
) -> PolicyPage:
    async with _reading(pool, reach) as conn:
        rows = await store.list_policies(
            conn, tenant_id=reach.tenant_id, limit=limit, offset=offset
        )
    return PolicyPage(
        policies=[_out(r) for r in rows[:limit]],
        limit=limit,
        offset=offset,
        has_more=len(rows) > limit,
    )


async def effective_policy(
    pool: AsyncConnectionPool,
    reach: Reach,
    tenant_id: uuid.UUID,
    settings: Settings,
    now: datetime,
) -> EffectivePolicyOut:
    """The tenant's own policy, or the defaults, as the janitor applies them at `now`."""
    require_reach(reach, tenant_id)
    async with _reading(pool, reach) as conn:
        # A tenant's own key (or the admin key acting for it) proved the tenant exists.
        if reach.every_tenant and not await store.tenant_exists(conn, tenant_id):
            raise NotFound(f"no tenant {tenant_id}")
        row = await store.policy_of(conn, tenant_id)
    if row is None:
        policy = EffectivePolicy.default(tenant_id, settings)
    else:
        policy = EffectivePolicy(
            tenant_id=tenant_id,
            retention_days=row.retention_days,
            max_size_gb=float(row.max_size_gb) if row.max_size_gb is not None else None,
            archive_enabled=row.archive_enabled,
            archive_path=row.archive_path,
            is_default=False,
        )
    return EffectivePolicyOut(
        tenant_id=tenant_id,
        is_default=policy.is_default,
        id=row.id if row else None,
        retention_days=policy.retention_days,
        max_size_gb=policy.max_size_gb,
        archive_enabled=policy.archive_enabled,
        archive_path=policy.archive_path,
        created_at=row.created_at if row else None,
        updated_at=row.updated_at if row else None,
        cutoff=policy.cutoff(now),
        max_size_bytes=policy.max_size_bytes(),
        global_max_size_gb=settings.log_max_size_gb,
    )


async def replace_policy(
    pool: AsyncConnectionPool,
    reach: Reach,
    actor: Actor,
    policy_id: uuid.UUID,
    policy: RetentionPolicyIn,
) -> RetentionPolicyOut:
    """Replace every field (absent optional fields take their defaults); the policy stays
    its tenant's."""
    if policy.tenant_id is not None:
        require_reach(reach, policy.tenant_id)
    archive_path = checked_archive_path(policy)
    async with _as_owner(pool) as conn:
        old = await store.lock_policy(conn, policy_id, tenant_id=reach.tenant_id)
        if old is None:
            raise _not_found(policy_id)
        if policy.tenant_id is not None and policy.tenant_id != old.tenant_id:
            raise ValidationFailed(
                "a policy stays its tenant's: create one for the other tenant instead",
                errors=[FieldError("tenant_id", f"must be {old.tenant_id} or absent")],
            )
        row = await store.replace_policy(conn, old.tenant_id, policy_id, policy, archive_path)
        await record_audit(
            conn,
            actor,
            "retention.replace",
            tenant_id=old.tenant_id,
            target_id=str(policy_id),
            details={**_audited(row), "before": _audited(old)},
        )
    return _out(row)


async def delete_policy(
    pool: AsyncConnectionPool, reach: Reach, actor: Actor, policy_id: uuid.UUID
) -> None:
    """The tenant falls back to the defaults from the janitor's next run."""
    async with _as_owner(pool) as conn:
        old = await store.delete_policy(conn, policy_id, tenant_id=reach.tenant_id)
        if old is None:
            raise _not_found(policy_id)
        await record_audit(
            conn,
            actor,
            "retention.delete",
            tenant_id=old.tenant_id,
            target_id=str(policy_id),
            details=_audited(old),
        )
