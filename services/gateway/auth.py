"""Who is calling: the tenant and what it may do.

Every handler takes a `Caller` (injected by `provide_caller`) and checks the scope it
needs; storage functions take `caller.tenant_id` explicitly. In `trusted_header` mode
(the seed's behaviour, for deployments behind an authenticating proxy) the tenant is
`X-Tenant-ID` and every scope is granted.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

from litestar import Request

from shared.errors import BadRequest, Forbidden, Unauthorized
from shared.settings import Settings

Scope = Literal["ingest", "query", "admin"]
ALL_SCOPES: frozenset[str] = frozenset({"ingest", "query", "admin"})


@dataclass(frozen=True, slots=True)
class Caller:
    tenant_id: uuid.UUID
    scopes: frozenset[str]
    key_id: uuid.UUID | None = None

    def require(self, scope: Scope) -> None:
        if scope not in self.scopes and "admin" not in self.scopes:
            raise Forbidden(f"this credential lacks the '{scope}' scope")


def tenant_from_header(request: Request[Any, Any, Any]) -> uuid.UUID:
    raw = request.headers.get("x-tenant-id")
    if raw is None or not raw.strip():
        raise Unauthorized("send the tenant in the X-Tenant-ID header")
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        raise BadRequest(
            "X-Tenant-ID must be a UUID, e.g. 123e4567-e89b-12d3-a456-426614174000"
        ) from None


async def provide_caller(request: Request[Any, Any, Any]) -> Caller:
    settings: Settings = request.app.state.settings
    if settings.auth_mode == "trusted_header":
        return Caller(tenant_id=tenant_from_header(request), scopes=ALL_SCOPES)
    raise Unauthorized("AUTH_MODE=api_key is not available in this version")
