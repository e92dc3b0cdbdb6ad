"""Who is calling: the tenant and what it may do.

Every handler takes a `Caller` (injected by `provide_caller`) and checks the scope it
needs; storage functions take `caller.tenant_id` explicitly.

- `AUTH_MODE=api_key` (the default): the key comes in `Authorization: Bearer <key>` or
  `X-API-Key`; it names its tenant and scopes. An admin key may act for another tenant
  by naming it in `X-Tenant-ID`; any other key naming a tenant not its own is refused
  (403). `ADMIN_API_KEY`, when set, is an operator key of the `system` tenant.
- `AUTH_MODE=trusted_header` (the seed's behaviour, for deployments behind a gateway that
  authenticates): the tenant is `X-Tenant-ID` and every scope is granted.

Keys are looked up through `Credentials`, cached AUTH_CACHE_SECONDS: a revoked key stops
working within that delay in every gateway (at once in the one that revoked it).
"""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.openapi.spec import Components, SecurityRequirement, SecurityScheme

from services.gateway.credentials import Credentials
from services.gateway.state import state_of
from shared.apikeys import key_digest
from shared.audit import Actor, ActorKind
from shared.errors import BadRequest, Forbidden, NotFound, Unauthorized
from shared.tenancy import SCOPES, SYSTEM_TENANT, Scope

ALL_SCOPES: frozenset[str] = frozenset(SCOPES)

# How the OpenAPI document describes the credentials: a controller that needs a caller
# sets `security = OPENAPI_SECURITY` (any one of the three).
OPENAPI_COMPONENTS = Components(
    security_schemes={
        "bearer": SecurityScheme(
            type="http", scheme="bearer", description="API key (AUTH_MODE=api_key)"
        ),
        "apiKey": SecurityScheme(
            type="apiKey",
            name="X-API-Key",
            security_scheme_in="header",
            description="API key (AUTH_MODE=api_key)",
        ),
        "tenantHeader": SecurityScheme(
            type="apiKey",
            name="X-Tenant-ID",
            security_scheme_in="header",
            description="The tenant, trusted as sent (AUTH_MODE=trusted_header). With an "
            "admin API key, the tenant to act for.",
        ),
    }
)
OPENAPI_SECURITY: list[SecurityRequirement] = [{"bearer": []}, {"apiKey": []}, {"tenantHeader": []}]
# A header longer than any key we issue is refused before it is hashed.
_MAX_KEY_LENGTH = 256
_MEMO = "minisource.caller"


@dataclass(frozen=True, slots=True)
class Caller:
    tenant_id: uuid.UUID
    scopes: frozenset[str]
    key_id: uuid.UUID | None = None
    via: ActorKind = "trusted_header"

    def require(self, scope: Scope) -> None:
        if scope not in self.scopes and "admin" not in self.scopes:
            raise Forbidden(f"this credential lacks the '{scope}' scope")

    @property
    def actor(self) -> Actor:
        """The caller as the audit trail records it."""
        return Actor(kind=self.via, key_id=self.key_id, tenant_id=self.tenant_id)


# The API's convention: what a path needs, whatever its handler. Checked by `scope_guard`
# before the request is parsed, so a caller without the scope learns nothing from
# validation errors; handlers still call `caller.require` themselves.
_INGEST_PATHS = ("/api/v1/logs", "/api/v1/logs/batch")


def conventional_scope(method: str, path: str) -> Scope | None:
    """admin under /api/v1/admin, ingest for POST /api/v1/logs and /batch, query for
    everything else under /api/v1/logs; None where handlers decide alone."""
    path = path.rstrip("/") or "/"
    if path == "/api/v1/admin" or path.startswith("/api/v1/admin/"):
        return "admin"
    if method == "POST" and path in _INGEST_PATHS:
        return "ingest"
    if path == "/api/v1/logs" or path.startswith("/api/v1/logs/"):
        return "query"
    return None


async def scope_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """App-wide guard: every /api/v1 request is authenticated (and its conventional scope
    checked) before its parameters and body are parsed."""
    path = connection.scope["path"]
    if not isinstance(connection, Request) or not path.startswith("/api/v1/"):
        return
    caller = await provide_caller(connection)
    scope = conventional_scope(connection.method, path)
    if scope is not None:
        caller.require(scope)


def tenant_from_header(request: Request[Any, Any, Any]) -> uuid.UUID | None:
    raw = request.headers.get("x-tenant-id")
    if raw is None or not raw.strip():
        return None
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        raise BadRequest(
            "X-Tenant-ID must be a UUID, e.g. 123e4567-e89b-12d3-a456-426614174000"
        ) from None


async def provide_caller(request: Request[Any, Any, Any]) -> Caller:
    """The caller of this request, authenticated once per request."""
    state = request.scope.setdefault("state", {})
    caller = state.get(_MEMO)
    if not isinstance(caller, Caller):
        caller = await _authenticate(request)
        state[_MEMO] = caller
    return caller


async def _authenticate(request: Request[Any, Any, Any]) -> Caller:
    state = state_of(request)
    settings = state.settings
    if settings.auth_mode == "trusted_header":
        tenant = tenant_from_header(request)
        if tenant is None:
            raise Unauthorized("send the tenant in the X-Tenant-ID header")
        return Caller(tenant_id=tenant, scopes=ALL_SCOPES)
    key = _presented_key(request)
    if settings.admin_api_key and hmac.compare_digest(
        key.encode("utf-8", "surrogateescape"), settings.admin_api_key.encode()
    ):
        caller = Caller(tenant_id=SYSTEM_TENANT, scopes=ALL_SCOPES, via="admin_api_key")
    else:
        grant = await state.credentials.key(key_digest(key))
        if grant is None:
            raise Unauthorized("the API key is unknown or revoked")
        caller = Caller(
            tenant_id=grant.tenant_id, scopes=grant.scopes, key_id=grant.key_id, via="api_key"
        )
    return await _acting_for(request, caller, state.credentials)


def _presented_key(request: Request[Any, Any, Any]) -> str:
    authorization = request.headers.get("authorization")
    header_key = (request.headers.get("x-api-key") or "").strip()
    bearer = ""
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("use Authorization: Bearer <key> (or X-API-Key: <key>)")
        bearer = value.strip()
    if bearer and header_key and bearer != header_key:
        raise BadRequest("Authorization and X-API-Key carry different keys; send one")
    key = bearer or header_key
    if not key:
        raise Unauthorized(
            "send an API key: Authorization: Bearer <key> or X-API-Key: <key>",
        )
    if len(key) > _MAX_KEY_LENGTH:
        raise Unauthorized("the API key is unknown or revoked")
    return key


async def _acting_for(
    request: Request[Any, Any, Any], caller: Caller, credentials: Credentials
) -> Caller:
    """Honour X-Tenant-ID: the key's own tenant, or any existing tenant for an admin key."""
    wanted = tenant_from_header(request)
    if wanted is None or wanted == caller.tenant_id:
        return caller
    if "admin" not in caller.scopes:
        raise Forbidden(
            "X-Tenant-ID names another tenant than the API key's; only admin keys may act "
            "for another tenant"
        )
    if await credentials.tenant(wanted) is None:
        raise NotFound(f"no tenant {wanted}")
    return Caller(tenant_id=wanted, scopes=caller.scopes, key_id=caller.key_id, via=caller.via)
