"""Tenants and API keys for tests, made through the same storage functions as the admin
API and the CLI (audit actor `cli`)."""

from __future__ import annotations

import uuid

from psycopg import AsyncConnection

from services.gateway.admin.audit import Actor
from services.gateway.admin.tenancy import Scope, TenantLimits, create_key, create_tenant
from shared.settings import Settings

_TEST_ACTOR = Actor(kind="cli")


async def add_tenant(
    settings: Settings,
    tenant_id: uuid.UUID | None = None,
    *,
    limits: TenantLimits | None = None,
) -> uuid.UUID:
    tenant_id = tenant_id or uuid.uuid4()
    async with await AsyncConnection.connect(settings.postgres_conninfo()) as conn:
        await create_tenant(
            conn, _TEST_ACTOR, name=f"tenant-{tenant_id}", tenant_id=tenant_id, limits=limits
        )
    return tenant_id


async def add_key(settings: Settings, tenant_id: uuid.UUID, *scopes: Scope) -> str:
    async with await AsyncConnection.connect(settings.postgres_conninfo()) as conn:
        made = await create_key(conn, _TEST_ACTOR, tenant_id=tenant_id, scopes=list(scopes))
    assert made is not None
    return made[1]


def key_headers(key: str, tenant: uuid.UUID | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    if tenant is not None:
        headers["X-Tenant-ID"] = str(tenant)
    return headers
