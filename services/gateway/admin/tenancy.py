"""Tenants and their API keys in PostgreSQL: what the admin API and the keys CLI manage
and what the gateway looks keys up in.

These are operator functions: they run as the owner role (not inside `tenant_scope`),
and listing functions may span tenants. Each change records itself in the audit trail in
the same transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from psycopg import AsyncConnection, errors
from psycopg.rows import class_row, dict_row

from services.gateway.admin.apikeys import generate_key, key_digest, key_prefix
from services.gateway.admin.audit import Actor, record_audit
from shared.errors import Conflict, NotFound
from shared.settings import Settings

Scope = Literal["ingest", "query", "admin", "alerts"]
SCOPES: tuple[Scope, ...] = ("ingest", "query", "admin", "alerts")
SYSTEM_TENANT = uuid.UUID(int=0)


# Bounds of the columns (integer, bigint): a value beyond them is refused on decoding.
_Rate = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
_ByteRate = Annotated[int, msgspec.Meta(ge=0, le=2**62)]
_Size = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]


class TenantLimits(msgspec.Struct, forbid_unknown_fields=True):
    """A tenant's own limits; null keeps the deployment's default for that limit. Rates
    of 0 are unlimited."""

    ingest_logs_per_second: _Rate | None = None
    ingest_bytes_per_second: _ByteRate | None = None
    max_concurrent_queries: _Size | None = None
    max_body_bytes: _Size | None = None
    max_entry_bytes: _Size | None = None
    max_metadata_keys: _Size | None = None
    max_batch_entries: _Size | None = None


LIMIT_COLUMNS: tuple[str, ...] = tuple(TenantLimits.__struct_fields__)


class Tenant(msgspec.Struct):
    id: uuid.UUID
    name: str
    created_at: datetime
    created_by: uuid.UUID | None
    limits: TenantLimits


class ApiKey(msgspec.Struct):
    """A key as listed: never the key itself, only its public prefix."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    created_by: uuid.UUID | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class KeyGrant:
    """What a presented key grants, as the gateway needs it."""

    key_id: uuid.UUID
    tenant_id: uuid.UUID
    scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class EffectiveLimits:
    """A tenant's limits with every default filled in from the settings."""

    logs_per_second: int
    bytes_per_second: int
    max_concurrent_queries: int
    max_body_bytes: int
    max_entry_bytes: int
    max_metadata_keys: int
    max_batch_entries: int

    @classmethod
    def of(cls, own: TenantLimits | None, settings: Settings) -> EffectiveLimits:
        own = own or TenantLimits()

        def pick(value: int | None, default: int) -> int:
            return default if value is None else value

        return cls(
            logs_per_second=pick(own.ingest_logs_per_second, settings.tenant_logs_per_second),
            bytes_per_second=pick(own.ingest_bytes_per_second, settings.tenant_bytes_per_second),
            max_concurrent_queries=pick(
                own.max_concurrent_queries, settings.tenant_max_concurrent_queries
            ),
            max_body_bytes=pick(own.max_body_bytes, settings.max_body_bytes),
            max_entry_bytes=pick(own.max_entry_bytes, settings.max_entry_bytes),
            max_metadata_keys=pick(own.max_metadata_keys, settings.max_metadata_keys),
            max_batch_entries=pick(own.max_batch_entries, settings.max_batch_entries),
        )


def limit_ceilings(settings: Settings) -> dict[str, int]:
    """Size limits a tenant may lower but not raise: the process enforces the
    deployment's value before it knows the tenant."""
    return {
        "max_body_bytes": settings.max_body_bytes,
        "max_entry_bytes": settings.max_entry_bytes,
        "max_metadata_keys": settings.max_metadata_keys,
        "max_batch_entries": settings.max_batch_entries,
    }


_TENANT_COLUMNS = "id, name, created_at, created_by, " + ", ".join(LIMIT_COLUMNS)


def _tenant(row: dict[str, Any]) -> Tenant:
    return Tenant(
        id=row["id"],
        name=row["name"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        limits=TenantLimits(**{c: row[c] for c in LIMIT_COLUMNS}),
    )


async def create_tenant(
    conn: AsyncConnection,
    actor: Actor,
    *,
    name: str,
    tenant_id: uuid.UUID | None = None,
    limits: TenantLimits | None = None,
) -> Tenant:
    """A new tenant; 409 when the id or the name is taken."""
    limits = limits or TenantLimits()
    tenant_id = tenant_id or uuid.uuid4()
    columns = ", ".join(LIMIT_COLUMNS)
    placeholders = ", ".join(["%s"] * len(LIMIT_COLUMNS))
    try:
        async with conn.transaction():
            cur = await conn.cursor(row_factory=dict_row).execute(
                f"INSERT INTO tenants (id, name, created_by, {columns}) "
                f"VALUES (%s, %s, %s, {placeholders}) RETURNING {_TENANT_COLUMNS}",
                (tenant_id, name, actor.key_id, *[getattr(limits, c) for c in LIMIT_COLUMNS]),
            )
            row = await cur.fetchone()
            assert row is not None
            await record_audit(
                conn,
                actor,
                "tenant.create",
                tenant_id=tenant_id,
                target_id=str(tenant_id),
                details={"name": name, "limits": msgspec.to_builtins(limits)},
            )
    except errors.UniqueViolation:
        raise await _taken(conn, tenant_id=tenant_id, name=name) from None
    return _tenant(row)


async def _taken(conn: AsyncConnection, *, tenant_id: uuid.UUID, name: str) -> Conflict:
    """The 409 for a tenant that could not be created, naming the tenant in the way (an id
    generated for this call exists nowhere: quoting it would send the caller looking for
    a tenant that is not there)."""
    cur = await conn.execute(
        "SELECT id, name FROM tenants WHERE name = %s OR id = %s", (name, tenant_id)
    )
    reasons = [
        f"a tenant named {name!r} exists (id {row[0]})"
        if row[1] == name
        else f"the id {tenant_id} belongs to the tenant {row[1]!r}"
        for row in await cur.fetchall()
    ]
    return Conflict("; ".join(reasons) or "a tenant with this name or id exists")


async def get_tenant(conn: AsyncConnection, tenant_id: uuid.UUID) -> Tenant | None:
    cur = await conn.cursor(row_factory=dict_row).execute(
        f"SELECT {_TENANT_COLUMNS} FROM tenants WHERE id = %s", (tenant_id,)
    )
    row = await cur.fetchone()
    return _tenant(row) if row else None


async def list_tenants(conn: AsyncConnection, *, limit: int, offset: int) -> list[Tenant]:
    """Every tenant, oldest first (operators only)."""
    cur = await conn.cursor(row_factory=dict_row).execute(
        f"SELECT {_TENANT_COLUMNS} FROM tenants ORDER BY created_at, id LIMIT %s OFFSET %s",
        (limit, offset),
    )
    return [_tenant(row) for row in await cur.fetchall()]


async def set_tenant_limits(
    conn: AsyncConnection, actor: Actor, tenant_id: uuid.UUID, limits: TenantLimits
) -> Tenant:
    """Replace a tenant's own limits (None = back to the default); 404 when unknown."""
    assignments = ", ".join(f"{c} = %s" for c in LIMIT_COLUMNS)
    async with conn.transaction():
        cur = await conn.cursor(row_factory=dict_row).execute(
            f"UPDATE tenants SET {assignments} WHERE id = %s RETURNING {_TENANT_COLUMNS}",
            (*[getattr(limits, c) for c in LIMIT_COLUMNS], tenant_id),
        )
        row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no tenant {tenant_id}")
        await record_audit(
            conn,
            actor,
            "tenant.limits",
            tenant_id=tenant_id,
            target_id=str(tenant_id),
            details={"limits": msgspec.to_builtins(limits)},
        )
    return _tenant(row)


async def create_key(
    conn: AsyncConnection,
    actor: Actor,
    *,
    tenant_id: uuid.UUID,
    scopes: list[Scope],
    name: str = "",
    bootstrap: bool = False,
) -> tuple[ApiKey, str] | None:
    """A new key for `tenant_id`: the stored record and the key itself, which exists
    nowhere else afterwards. 404 when the tenant is unknown; None when `bootstrap` and a
    bootstrap key exists already."""
    key = generate_key()
    key_id = uuid.uuid4()
    wanted = sorted(set(scopes), key=SCOPES.index)
    async with conn.transaction():
        try:
            cur = await conn.execute(
                """INSERT INTO api_keys
                       (id, tenant_id, name, prefix, key_hash, scopes, bootstrap, created_by)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (bootstrap) WHERE bootstrap DO NOTHING
                   RETURNING id, tenant_id, name, prefix, scopes, created_at, created_by,
                             revoked_at""",
                (
                    key_id,
                    tenant_id,
                    name,
                    key_prefix(key),
                    key_digest(key),
                    wanted,
                    bootstrap,
                    actor.key_id,
                ),
            )
        except errors.ForeignKeyViolation:
            raise NotFound(f"no tenant {tenant_id}; create it first") from None
        row = await cur.fetchone()
        if row is None:
            return None
        await record_audit(
            conn,
            actor,
            "key.create",
            tenant_id=tenant_id,
            target_id=str(key_id),
            details={"name": name, "scopes": wanted, "prefix": key_prefix(key)},
        )
    return ApiKey(*row), key


_KEY_COLUMNS = "id, tenant_id, name, prefix, scopes, created_at, created_by, revoked_at"


async def list_keys(
    conn: AsyncConnection, *, tenant_id: uuid.UUID | None, limit: int, offset: int
) -> list[ApiKey]:
    """One tenant's keys, or every tenant's when `tenant_id` is None (operators only)."""
    cur = await conn.cursor(row_factory=class_row(ApiKey)).execute(
        f"""SELECT {_KEY_COLUMNS} FROM api_keys
             WHERE %(tenant)s::uuid IS NULL OR tenant_id = %(tenant)s::uuid
             ORDER BY created_at, id LIMIT %(limit)s OFFSET %(offset)s""",
        {"tenant": tenant_id, "limit": limit, "offset": offset},
    )
    return await cur.fetchall()


async def revoke_key(conn: AsyncConnection, actor: Actor, key_id: uuid.UUID) -> ApiKey:
    """Revoke a key (idempotent: revoking twice keeps the first time); 404 when unknown."""
    async with conn.transaction():
        cur = await conn.cursor(row_factory=class_row(ApiKey)).execute(
            f"""UPDATE api_keys
                   SET revoked_at = coalesce(revoked_at, now()),
                       revoked_by = CASE WHEN revoked_at IS NULL THEN %s ELSE revoked_by END
                 WHERE id = %s
                 RETURNING {_KEY_COLUMNS}""",
            (actor.key_id, key_id),
        )
        key = await cur.fetchone()
        if key is None:
            raise NotFound(f"no API key {key_id}")
        await record_audit(
            conn, actor, "key.revoke", tenant_id=key.tenant_id, target_id=str(key_id)
        )
    return key


async def find_key(conn: AsyncConnection, digest: bytes) -> KeyGrant | None:
    """The grant of a live (not revoked) key with this digest, or None."""
    cur = await conn.execute(
        "SELECT id, tenant_id, scopes FROM api_keys WHERE key_hash = %s AND revoked_at IS NULL",
        (digest,),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return KeyGrant(key_id=row[0], tenant_id=row[1], scopes=frozenset(row[2]))


async def ensure_bootstrap_key(conn: AsyncConnection) -> str | None:
    """The operators' first key, made once per database: the key text when this call made
    it (the caller shows it, once), None when one was made before."""
    made = await create_key(
        conn,
        Actor(kind="bootstrap"),
        tenant_id=SYSTEM_TENANT,
        scopes=["admin"],
        name="bootstrap admin",
        bootstrap=True,
    )
    return made[1] if made else None


async def first_admin_key(settings: Settings) -> str | None:
    """The bootstrap admin key when this call made it, for the gateway to print once it
    serves; None when AUTH_MODE is not api_key, ADMIN_API_KEY is set, or one exists."""
    if settings.auth_mode != "api_key" or settings.admin_api_key:
        return None
    async with await AsyncConnection.connect(settings.postgres_conninfo()) as conn:
        return await ensure_bootstrap_key(conn)


async def tenant_id_by_name(conn: AsyncConnection, name: str) -> uuid.UUID | None:
    cur = await conn.execute("SELECT id FROM tenants WHERE name = %s", (name,))
    row = await cur.fetchone()
    return row[0] if row else None
