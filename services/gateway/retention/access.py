"""Who manages which retention policies.

The admin key of the `system` tenant (scope `admin`, no X-Tenant-ID) is the operator: it
manages every tenant's policy, naming the tenant, and reads the janitor's runs. Any other
caller with the admin scope (a tenant's admin key, or the admin key acting for a tenant
through X-Tenant-ID) manages its own tenant's policy only: another tenant's policy id is
404, as an unknown one; naming another tenant is 403.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from services.gateway.admin.tenancy import SYSTEM_TENANT
from services.gateway.auth import Caller
from shared.errors import FieldError, Forbidden, ValidationFailed


@dataclass(frozen=True, slots=True)
class Reach:
    """Whose policies a caller sees and changes: one tenant's, or (`tenant_id` None, the
    operator) every tenant's."""

    tenant_id: uuid.UUID | None

    @property
    def every_tenant(self) -> bool:
        return self.tenant_id is None


def reach_of(caller: Caller) -> Reach:
    caller.require("admin")
    # `system` holds no logs, so the admin key without X-Tenant-ID acts for no tenant of
    # its own: it is the operator.
    return Reach(None if caller.tenant_id == SYSTEM_TENANT else caller.tenant_id)


def require_operator(caller: Caller) -> None:
    """The janitor's runs span every tenant: only the operator reads them."""
    if reach_of(caller).every_tenant:
        return
    raise Forbidden(
        "the retention status covers every tenant: it takes the admin key (ADMIN_API_KEY "
        "or an admin key of the `system` tenant), without X-Tenant-ID"
    )


def tenant_named(reach: Reach, named: uuid.UUID | None) -> uuid.UUID:
    """The tenant a policy body is for: `tenant_id` when it names one (the operator must),
    else the caller's own."""
    if reach.tenant_id is None:
        if named is None:
            raise ValidationFailed(
                "the admin key acts for no tenant: name it in tenant_id",
                errors=[FieldError("tenant_id", "required with the admin key")],
            )
        return named
    if named is not None and named != reach.tenant_id:
        raise forbidden_tenant()
    return reach.tenant_id


def require_reach(reach: Reach, tenant_id: uuid.UUID) -> None:
    """A tenant named in a path must be within the caller's reach."""
    if reach.tenant_id is not None and tenant_id != reach.tenant_id:
        raise forbidden_tenant()


def forbidden_tenant() -> Forbidden:
    return Forbidden("this key manages its own tenant's retention policy only")
