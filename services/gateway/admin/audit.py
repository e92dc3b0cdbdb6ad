"""The admin audit trail: who changed tenants, keys or policies, and when.

Every admin change calls `record_audit` on the connection (and in the transaction) that
makes the change, so the change and its record commit together or not at all.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import msgspec
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

ActorKind = Literal["api_key", "admin_api_key", "trusted_header", "cli", "bootstrap"]


class Actor(msgspec.Struct, frozen=True):
    """Who acts: how they authenticated, with which key, for which tenant."""

    kind: ActorKind
    key_id: uuid.UUID | None = None
    tenant_id: uuid.UUID | None = None


class AuditEvent(msgspec.Struct):
    id: int
    at: datetime
    actor: str
    actor_key_id: uuid.UUID | None
    actor_tenant_id: uuid.UUID | None
    action: str
    tenant_id: uuid.UUID | None
    target_id: str | None
    details: dict[str, Any]


async def record_audit(
    conn: AsyncConnection,
    actor: Actor,
    action: str,
    *,
    tenant_id: uuid.UUID | None,
    target_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Record one admin action, e.g. `key.revoke` on a key of `tenant_id`."""
    await conn.execute(
        """INSERT INTO admin_audit
               (actor, actor_key_id, actor_tenant_id, action, tenant_id, target_id, details)
           VALUES (%s, %s, %s, %s, %s, %s, %s)""",
        (
            actor.kind,
            actor.key_id,
            actor.tenant_id,
            action,
            tenant_id,
            target_id,
            Jsonb(details or {}),
        ),
    )


async def list_audit(
    conn: AsyncConnection,
    *,
    tenant_id: uuid.UUID | None,
    limit: int,
    before_id: int | None = None,
) -> list[AuditEvent]:
    """Newest first; one tenant's events, or every tenant's when `tenant_id` is None
    (operators only). `before_id` pages back from the last id seen."""
    cur = await conn.execute(
        """SELECT id, at, actor, actor_key_id, actor_tenant_id, action, tenant_id, target_id,
                  details
             FROM admin_audit
            WHERE (%(tenant)s::uuid IS NULL OR tenant_id = %(tenant)s::uuid)
              AND (%(before)s::bigint IS NULL OR id < %(before)s::bigint)
            ORDER BY id DESC
            LIMIT %(limit)s""",
        {"tenant": tenant_id, "before": before_id, "limit": limit},
    )
    return [AuditEvent(*row) for row in await cur.fetchall()]
