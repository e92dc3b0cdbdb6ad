"""/api/v1/admin: tenants, API keys and the audit trail, for operators (scope `admin`).

An admin key manages every tenant. A new key is in the answer of its creation and
nowhere else afterwards (only its digest is stored). Every change is recorded in the
audit trail with the acting key and time (`GET /api/v1/admin/audit`).
"""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec
from litestar import Controller, Response, get, post, put
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, Parameter

from services.gateway.admin.audit import AuditEvent, list_audit
from services.gateway.admin.tenancy import (
    SCOPES,
    ApiKey,
    Scope,
    Tenant,
    TenantLimits,
    create_key,
    create_tenant,
    get_tenant,
    limit_ceilings,
    list_keys,
    list_tenants,
    revoke_key,
    set_tenant_limits,
)
from services.gateway.auth import OPENAPI_SECURITY, Caller, provide_caller
from services.gateway.state import GatewayState
from shared.errors import FieldError, NotFound, ValidationFailed
from shared.settings import Settings

# Printable text: PostgreSQL cannot store NUL, UTF-8 cannot hold lone surrogates.
_TEXT = r"^[^\x00-\x1f\x7f\ud800-\udfff]*$"
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=_TEXT)]
Label = Annotated[str, msgspec.Meta(max_length=128, pattern=_TEXT)]
PageLimit = Annotated[int, Parameter(ge=1, le=1000, description="Most items returned.")]
Offset = Annotated[int, Parameter(ge=0, le=1_000_000, description="Items skipped.")]


class TenantIn(msgspec.Struct, forbid_unknown_fields=True):
    """A tenant to create; `id` is generated when absent."""

    name: Name
    id: uuid.UUID | None = None
    limits: TenantLimits = msgspec.field(default_factory=TenantLimits)


class KeyIn(msgspec.Struct, forbid_unknown_fields=True):
    """A key to create for `tenant_id` with these scopes."""

    tenant_id: uuid.UUID
    scopes: Annotated[list[Scope], msgspec.Meta(min_length=1, max_length=len(SCOPES))]
    name: Label = ""


class KeyCreated(ApiKey):
    """The new key's record and the key itself: store it now, it is not shown again."""

    key: str


def _check_ceilings(limits: TenantLimits, settings: Settings) -> None:
    errors = [
        FieldError(
            field=f"limits.{name}",
            reason=f"at most {ceiling}: the deployment's own limit cannot be raised per tenant",
        )
        for name, ceiling in limit_ceilings(settings).items()
        if (value := getattr(limits, name)) is not None and value > ceiling
    ]
    if errors:
        raise ValidationFailed("a limit is above the deployment's", errors=errors)


class AdminController(Controller):
    path = "/api/v1/admin"
    tags = ["admin"]
    dependencies = {"caller": Provide(provide_caller)}
    security = OPENAPI_SECURITY

    @post("/tenants", status_code=201, summary="Create a tenant")
    async def create_tenant(
        self,
        caller: NamedDependency[Caller],
        gateway: NamedDependency[GatewayState],
        data: JSONBody[TenantIn],
    ) -> Tenant:
        caller.require("admin")
        _check_ceilings(data.limits, gateway.settings)
        async with gateway.pool.connection() as conn:
            return await create_tenant(
                conn, caller.actor, name=data.name, tenant_id=data.id, limits=data.limits
            )

    @get("/tenants", summary="List tenants, oldest first")
    async def list_tenants(
        self,
        caller: NamedDependency[Caller],
        gateway: NamedDependency[GatewayState],
        limit: PageLimit = 100,
        offset: Offset = 0,
    ) -> list[Tenant]:
        caller.require("admin")
        async with gateway.pool.connection() as conn:
            return await list_tenants(conn, limit=limit, offset=offset)

    @get("/tenants/{tenant_id:uuid}", summary="Get a tenant and its limits")
    async def get_tenant(
        self,
        caller: NamedDependency[Caller],
        gateway: NamedDependency[GatewayState],
        tenant_id: FromPath[uuid.UUID],
    ) -> Tenant:
        caller.require("admin")
        async with gateway.pool.connection() as conn:
            tenant = await get_tenant(conn, tenant_id)
        if tenant is None:
            raise NotFound(f"no tenant {tenant_id}")
        return tenant

    @put(
        "/tenants/{tenant_id:uuid}/limits",
        summary="Replace a tenant's limits (null = the deployment's default)",
    )
    async def set_limits(
        self,
        caller: NamedDependency[Caller],
        gateway: NamedDependency[GatewayState],
        tenant_id: FromPath[uuid.UUID],
        data: JSONBody[TenantLimits],
    ) -> Tenant:
        caller.require("admin")
        _check_ceilings(data, gateway.settings)
        async with gateway.pool.connection() as conn:
            tenant = await set_tenant_limits(conn, caller.actor, tenant_id, data)
        gateway.credentials.forget_tenant(tenant_id)
        return tenant

    @post("/keys", status_code=201, summary="Create an API key (shown once)")
    async def create_key(
        self,
        caller: NamedDependency[Caller],
        gateway: NamedDependency[GatewayState],
        data: JSONBody[KeyIn],
    ) -> Response[KeyCreated]:
        caller.require("admin")
        async with gateway.pool.connection() as conn:
            made = await create_key(
                conn, caller.actor, tenant_id=data.tenant_id, scopes=data.scopes, name=data.name
            )
        assert made is not None  # None only for bootstrap keys
        record, key = made
        created = KeyCreated(**msgspec.structs.asdict(record), key=key)
        return Response(created, status_code=201, headers={"Cache-Control": "no-store"})

    @get("/keys", summary="List API keys (never the keys themselves)")
    async def list_keys(
        self,
        caller: NamedDependency[Caller],
        gateway: NamedDependency[GatewayState],
        tenant_id: Annotated[
            uuid.UUID | None, Parameter(description="Only this tenant's keys.")
        ] = None,
        limit: PageLimit = 100,
        offset: Offset = 0,
    ) -> list[ApiKey]:
        caller.require("admin")
        async with gateway.pool.connection() as conn:
            return await list_keys(conn, tenant_id=tenant_id, limit=limit, offset=offset)

    @post("/keys/{key_id:uuid}/revoke", status_code=200, summary="Revoke an API key")
    async def revoke_key(
        self,
        caller: NamedDependency[Caller],
        gateway: NamedDependency[GatewayState],
        key_id: FromPath[uuid.UUID],
    ) -> ApiKey:
        caller.require("admin")
        async with gateway.pool.connection() as conn:
            key = await revoke_key(conn, caller.actor, key_id)
        # Other gateways stop accepting it within AUTH_CACHE_SECONDS; this one at once.
        gateway.credentials.forget_keys()
        return key

    @get("/audit", summary="The audit trail of admin actions, newest first")
    async def audit(
        self,
        caller: NamedDependency[Caller],
        gateway: NamedDependency[GatewayState],
        tenant_id: Annotated[
            uuid.UUID | None, Parameter(description="Only actions on this tenant.")
        ] = None,
        before_id: Annotated[
            int | None, Parameter(ge=1, le=2**62, description="Page back: ids below this.")
        ] = None,
        limit: PageLimit = 100,
    ) -> list[AuditEvent]:
        caller.require("admin")
        async with gateway.pool.connection() as conn:
            return await list_audit(conn, tenant_id=tenant_id, limit=limit, before_id=before_id)
