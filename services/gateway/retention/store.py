"""The SQL of the retention API. Every policy function takes the tenant and puts it in
its WHERE clause; `tenant_id=None` (keyword-only, never a default) is the operator's
reach over every tenant. Reads of one tenant run inside `tenant_scope`, where row-level
security is the second wall (services/gateway/retention/policies.py says which
transaction runs where)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import class_row

from services.gateway.retention.models import RetentionRunOut
from shared.retention import RetentionPolicyIn


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    """A row of log_retention_policies."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    retention_days: int
    max_size_gb: Decimal | None  # numeric(12, 3)
    archive_enabled: bool
    archive_path: str | None
    created_at: datetime
    updated_at: datetime


_COLUMNS = sql.SQL(
    "id, tenant_id, retention_days, max_size_gb, archive_enabled, archive_path, created_at, "
    "updated_at"
)
# The operator's reach is every tenant: `%(tenant)s` is NULL then.
_IN_REACH = sql.SQL("(%(tenant)s::uuid IS NULL OR tenant_id = %(tenant)s::uuid)")


def _written(policy: RetentionPolicyIn, archive_path: str | None) -> dict[str, Any]:
    return {
        "days": policy.retention_days,
        "size": policy.max_size_gb,
        "archive": policy.archive_enabled,
        "path": archive_path,
    }


async def tenant_exists(conn: AsyncConnection[Any], tenant_id: uuid.UUID) -> bool:
    cur = await conn.execute("SELECT FROM tenants WHERE id = %s", (tenant_id,))
    return await cur.fetchone() is not None


async def insert_policy(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    policy: RetentionPolicyIn,
    archive_path: str | None,
) -> StoredPolicy | None:
    """The new policy; None when the tenant has one already (one per tenant)."""
    query = sql.SQL(
        "INSERT INTO log_retention_policies "
        "(id, tenant_id, retention_days, max_size_gb, archive_enabled, archive_path) "
        "VALUES (%(id)s, %(tenant)s, %(days)s, %(size)s, %(archive)s, %(path)s) "
        "ON CONFLICT (tenant_id) DO NOTHING RETURNING {}"
    ).format(_COLUMNS)
    params = {"id": uuid.uuid4(), "tenant": tenant_id, **_written(policy, archive_path)}
    cur = conn.cursor(row_factory=class_row(StoredPolicy))
    await cur.execute(query, params)
    return await cur.fetchone()


async def lock_policy(
    conn: AsyncConnection[Any], policy_id: uuid.UUID, *, tenant_id: uuid.UUID | None
) -> StoredPolicy | None:
    """The policy, locked until the transaction ends; None if not in reach."""
    query = sql.SQL(
        "SELECT {} FROM log_retention_policies WHERE id = %(id)s AND {} FOR UPDATE"
    ).format(_COLUMNS, _IN_REACH)
    cur = conn.cursor(row_factory=class_row(StoredPolicy))
    await cur.execute(query, {"id": policy_id, "tenant": tenant_id})
    return await cur.fetchone()


async def replace_policy(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    policy_id: uuid.UUID,
    policy: RetentionPolicyIn,
    archive_path: str | None,
) -> StoredPolicy:
    """Replace every field a client writes; the caller holds the row (lock_policy)."""
    query = sql.SQL(
        "UPDATE log_retention_policies SET retention_days = %(days)s, max_size_gb = %(size)s, "
        "archive_enabled = %(archive)s, archive_path = %(path)s, updated_at = now() "
        "WHERE tenant_id = %(tenant)s AND id = %(id)s RETURNING {}"
    ).format(_COLUMNS)
    params = {"id": policy_id, "tenant": tenant_id, **_written(policy, archive_path)}
    cur = conn.cursor(row_factory=class_row(StoredPolicy))
    await cur.execute(query, params)
    row = await cur.fetchone()
    assert row is not None  # locked by the caller
    return row


async def delete_policy(
    conn: AsyncConnection[Any], policy_id: uuid.UUID, *, tenant_id: uuid.UUID | None
) -> StoredPolicy | None:
    """The policy removed; None if not in reach."""
    query = sql.SQL(
        "DELETE FROM log_retention_policies WHERE id = %(id)s AND {} RETURNING {}"
    ).format(_IN_REACH, _COLUMNS)
    cur = conn.cursor(row_factory=class_row(StoredPolicy))
    await cur.execute(query, {"id": policy_id, "tenant": tenant_id})
    return await cur.fetchone()


async def policy_of(conn: AsyncConnection[Any], tenant_id: uuid.UUID) -> StoredPolicy | None:
    cur = conn.cursor(row_factory=class_row(StoredPolicy))
    await cur.execute(
        sql.SQL("SELECT {} FROM log_retention_policies WHERE tenant_id = %s").format(_COLUMNS),
        (tenant_id,),
    )
    return await cur.fetchone()


async def list_policies(
    conn: AsyncConnection[Any], *, tenant_id: uuid.UUID | None, limit: int, offset: int
) -> list[StoredPolicy]:
    """A page of policies, oldest first, plus one more when there are more."""
    query = sql.SQL(
        "SELECT {} FROM log_retention_policies WHERE {} "
        "ORDER BY created_at, id LIMIT %(limit)s OFFSET %(offset)s"
    ).format(_COLUMNS, _IN_REACH)
    cur = conn.cursor(row_factory=class_row(StoredPolicy))
    await cur.execute(query, {"tenant": tenant_id, "limit": limit + 1, "offset": offset})
    return await cur.fetchall()


_RUN_COLUMNS = sql.SQL(
    "id, started_at, finished_at, dropped_partitions, deleted_rows, deleted_bytes, "
    "archived_rows, archived_bytes, archived_files, actions, errors"
)


async def recent_runs(
    conn: AsyncConnection[Any], *, limit: int, before_id: int | None
) -> list[RetentionRunOut]:
    """Runs newest first (by start, the order of retention_runs_started), those after run
    `before_id` in that order when it is given; plus one more when there are more."""
    after = sql.SQL("")
    if before_id is not None:
        # An unknown id compares as NULL: an empty page, not the newest runs again.
        after = sql.SQL(
            "WHERE (started_at, id) < "
            "(SELECT started_at, id FROM retention_runs WHERE id = %(before)s)"
        )
    query = sql.SQL(
        "SELECT {} FROM retention_runs {} ORDER BY started_at DESC, id DESC LIMIT %(limit)s"
    ).format(_RUN_COLUMNS, after)
    cur = conn.cursor(row_factory=class_row(RetentionRunOut))
    await cur.execute(query, {"before": before_id, "limit": limit + 1})
    return await cur.fetchall()
