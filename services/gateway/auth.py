"""Who is calling: the tenant and what it may do.

Every handler takes a `Caller` (injected by `provide_caller`) and checks the scope it
needs; storage functions take `caller.tenant_id` explicitly.

- `AUTH_MODE=api_key` (the default): the key comes in `Authorization: Bearer <key>` or
  `X-API-Key`; it names its tenant and scopes. An admin key may act for another tenant
  by naming it in `X-Tenant-ID`; any other key naming a tenant not its own is refused
  (403). `ADMIN_API_KEY`, when set, is an operator key of the `system` tenant.
- `AUTH_MODE=trusted_header` (the seed's behaviour, for deployments behind a gateway that
  authenticates): the tenant is `X-Tenant-ID`, with the ingest, query and alerts
  scopes.

Operator requests (the admin API, retention policies, and reads across tenants with
`all_tenants=true`) need the admin scope, which only a key carries: in both modes they
are authenticated by the key as in `api_key` mode, so a trusted X-Tenant-ID alone never
administers the service. On tenant-data routes an admin key of the `system` tenant must
name the tenant it acts for in X-Tenant-ID (400 otherwise): `system` holds no logs, and
its empty pages would look like a working query.

Keys are looked up through `Credentials`, cached AUTH_CACHE_SECONDS: a revoked key stops
working within that delay in every gateway (at once in the one that revoked it).
"""

from __future__ import annotations

import base64
import hmac
import uuid
from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.openapi.spec import Components, SecurityRequirement, SecurityScheme
from litestar.types import Scope as AsgiScope

from services.gateway.admin.apikeys import key_digest
from services.gateway.admin.audit import Actor, ActorKind
from services.gateway.admin.tenancy import SCOPES, SYSTEM_TENANT, Scope
from services.gateway.credentials import Credentials
from services.gateway.state import state_of
from shared.errors import BadRequest, Forbidden, NotFound, Unauthorized

ALL_SCOPES: frozenset[str] = frozenset(SCOPES)
# What a trusted X-Tenant-ID grants: its tenant's data (logs and alert rules, as in the
# seed), never the admin scope.
TRUSTED_HEADER_SCOPES: frozenset[str] = frozenset({"ingest", "query", "alerts"})

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
_INGEST_PATHS = (
    "/api/v1/logs",
    "/api/v1/logs/batch",
    "/api/v1/logs/ndjson",
    "/api/v1/otlp/v1/logs",
)
_ADMIN_PREFIXES = ("/api/v1/admin", "/api/v1/retention")
# Loki's API (push, and the read API to come): its clients send X-Scope-OrgID.
_LOKI_PREFIX = "/loki/"


def conventional_scope(method: str, path: str) -> Scope | None:
    """admin under /api/v1/admin and /api/v1/retention, alerts under /api/v1/alerts,
    ingest for POST /api/v1/logs, /batch, /ndjson and /api/v1/otlp/v1/logs (OTLP's
    /v1/logs checks its own), query for everything else under
    /api/v1/logs; None where handlers decide alone.

    Admin routes are operator requests: a trusted X-Tenant-ID alone never reaches them,
    and the admin key of `system` needs no X-Tenant-ID there (retention policies name
    their tenant in the path or body; services/gateway/retention/access.py)."""
    path = path.rstrip("/") or "/"
    if any(path == p or path.startswith(p + "/") for p in _ADMIN_PREFIXES):
        return "admin"
    if path == "/api/v1/alerts" or path.startswith("/api/v1/alerts/"):
        return "alerts"
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
    if scope != "admin":  # every other /api/v1 route acts on one tenant's data
        require_named_tenant(connection, caller)


def is_operator_request(request: Request[Any, Any, Any]) -> bool:
    """The admin API, or a read across tenants (`all_tenants=true`, parsed as Litestar
    parses a bool): requests that need the admin scope whatever the route."""
    if conventional_scope(request.method, request.scope["path"]) == "admin":
        return True
    # Most requests have no such parameter: the query string is parsed only when it may.
    if b"all_tenants" not in request.scope.get("query_string", b""):
        return False
    return request.query_params.get("all_tenants", "").lower() in ("true", "1")


def require_named_tenant(request: Request[Any, Any, Any], caller: Caller) -> None:
    """On a tenant-data route, an admin key of the `system` tenant must name the tenant it
    acts for: `system` holds no logs, so answering for it would be an empty page that
    looks like a working query (a cross-tenant read with all_tenants=true needs none)."""
    if caller.tenant_id != SYSTEM_TENANT or "admin" not in caller.scopes:
        return
    if tenant_from_header(request) is not None or is_operator_request(request):
        return
    raise BadRequest(
        "this admin key belongs to the `system` tenant, which holds no logs: send "
        "X-Tenant-ID: <tenant id> naming the tenant to act for"
    )


def tenant_from_header(request: Request[Any, Any, Any]) -> uuid.UUID | None:
    """X-Tenant-ID; under /loki/ also X-Scope-OrgID, the header Loki's clients (Promtail,
    Alloy, Grafana) name their tenant in. X-Tenant-ID wins when both are sent: a proxy
    in front that sets it decides, whatever tenant_id the agent was configured with."""
    header, raw = "X-Tenant-ID", request.headers.get("x-tenant-id")
    if (raw is None or not raw.strip()) and request.scope["path"].startswith(_LOKI_PREFIX):
        header, raw = "X-Scope-OrgID", request.headers.get("x-scope-orgid")
    if raw is None or not raw.strip():
        return None
    if "|" in raw:
        # Loki's multi-tenant query (`a|b`): a caller reads one tenant, its own.
        raise BadRequest(f"{header} names several tenants; multi-tenant queries are not supported")
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        raise BadRequest(
            f"{header} must be a UUID, e.g. 123e4567-e89b-12d3-a456-426614174000"
        ) from None


async def provide_caller(request: Request[Any, Any, Any]) -> Caller:
    """The caller of this request, authenticated once per request."""
    state = request.scope.setdefault("state", {})
    caller = state.get(_MEMO)
    if not isinstance(caller, Caller):
        caller = await _authenticate(request)
        state[_MEMO] = caller
    return caller


def memoised_caller(scope: AsgiScope) -> Caller | None:
    """The caller this request was authenticated as, if it was (read by the access log
    after the answer, so it never authenticates anything itself)."""
    caller = scope.get("state", {}).get(_MEMO)
    return caller if isinstance(caller, Caller) else None


async def _authenticate(request: Request[Any, Any, Any]) -> Caller:
    state = state_of(request)
    settings = state.settings
    if settings.auth_mode == "trusted_header":
        if not is_operator_request(request):
            tenant = tenant_from_header(request)
            if tenant is None:
                raise Unauthorized("send the tenant in the X-Tenant-ID header")
            return Caller(tenant_id=tenant, scopes=TRUSTED_HEADER_SCOPES)
        # A trusted header says which tenant, not who may administer: that takes a key.
        key = _presented_key(
            request,
            missing="admin requests need the admin key (ADMIN_API_KEY or a key with the "
            "admin scope) as Authorization: Bearer <key> or X-API-Key: <key>; "
            "X-Tenant-ID alone is not enough",
        )
    else:
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


def _presented_key(
    request: Request[Any, Any, Any],
    missing: str = "send an API key: Authorization: Bearer <key> or X-API-Key: <key>",
) -> str:
    authorization = request.headers.get("authorization")
    header_key = (request.headers.get("x-api-key") or "").strip()
    bearer = ""
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "basic" and request.scope["path"].startswith(_LOKI_PREFIX):
            # Grafana's Loki data source sends credentials as basic auth: the key is the
            # password (the user name is not used).
            bearer = _basic_password(value)
        elif scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("use Authorization: Bearer <key> (or X-API-Key: <key>)")
        else:
            bearer = value.strip()
    if bearer and header_key and bearer != header_key:
        raise BadRequest("Authorization and X-API-Key carry different keys; send one")
    key = bearer or header_key
    if not key:
        raise Unauthorized(missing)
    if len(key) > _MAX_KEY_LENGTH:
        raise Unauthorized("the API key is unknown or revoked")
    return key


def _basic_password(value: str) -> str:
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise Unauthorized("Authorization: Basic must carry base64 of user:key") from None
    _, colon, password = decoded.partition(":")
    if not colon or not password.strip():
        raise Unauthorized("Authorization: Basic must carry the API key as its password")
    return password.strip()


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
