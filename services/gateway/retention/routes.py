"""/api/v1/retention: per-tenant retention policies (scope `admin`) and the janitor's
runs (the admin key only).

Who manages which policy is in services/gateway/retention/access.py: the admin key any
tenant's (naming it), a tenant's admin key its own only. Bodies are `RetentionPolicyIn`
(unknown fields refused), checked further for the archive path; either refusal is a 422
naming the field, and nothing is stored. One transaction per operation, recorded in the
admin audit trail (services/gateway/retention/policies.py).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from litestar import Controller, delete, get, post, put
from litestar.di import NamedDependency, Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import Body, FromPath, Parameter

from services.gateway.auth import OPENAPI_SECURITY, Caller, provide_caller
from services.gateway.openapi import example_response
from services.gateway.retention import policies, runs
from services.gateway.retention.access import reach_of, require_operator
from services.gateway.retention.models import (
    EffectivePolicyOut,
    PolicyPage,
    RetentionPolicyOut,
    RetentionStatusOut,
)
from services.gateway.state import GatewayState
from shared.retention import RetentionPolicyIn

PageLimit = Annotated[int, Parameter(ge=1, le=1000, description="Most items returned.")]
Offset = Annotated[int, Parameter(ge=0, le=1_000_000, description="Items skipped.")]
RunsLimit = Annotated[int, Parameter(ge=1, le=1000, description="Most runs returned.")]
BeforeId = Annotated[
    int | None,
    Parameter(ge=1, le=2**62, description="Page back: the runs started before this run."),
]

_POLICY_IN_EXAMPLE = {
    "tenant_id": "123e4567-e89b-12d3-a456-426614174000",
    "retention_days": 7,
    "max_size_gb": 20,
    "archive_enabled": True,
    "archive_path": "cold/acme",
}
_POLICY_EXAMPLE = {
    "id": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
    "tenant_id": "123e4567-e89b-12d3-a456-426614174000",
    "retention_days": 7,
    "max_size_gb": 20.0,
    "archive_enabled": True,
    "archive_path": "cold/acme",
    "created_at": "2024-01-15T09:00:00Z",
    "updated_at": "2024-01-15T09:00:00Z",
}
_EFFECTIVE_EXAMPLE = {
    "tenant_id": "123e4567-e89b-12d3-a456-426614174000",
    "is_default": True,
    "id": None,
    "retention_days": 30,
    "max_size_gb": None,
    "archive_enabled": False,
    "archive_path": None,
    "created_at": None,
    "updated_at": None,
    "cutoff": "2023-12-16T00:00:00Z",
    "max_size_bytes": None,
    "global_max_size_gb": 50.0,
}
_RUN_EXAMPLE = {
    "id": 412,
    "started_at": "2024-01-15T10:30:00Z",
    "finished_at": "2024-01-15T10:30:04.250Z",
    "dropped_partitions": 1,
    "deleted_rows": 12000,
    "deleted_bytes": 3540000,
    "archived_rows": 12000,
    "archived_bytes": 1100000,
    "archived_files": 1,
    "actions": [
        {
            "tenant_id": "123e4567-e89b-12d3-a456-426614174000",
            "day": "2024-01-07",
            "rows": 12000,
            "bytes": 3540000,
            "reason": "retention",
            "archived": True,
        }
    ],
    "errors": [],
}


_POLICY = example_response(RetentionPolicyOut, "The policy.", _POLICY_EXAMPLE)
# Error answers are problem JSON (services/gateway/openapi.py gives them the schema).
_NO_POLICY = {404: ResponseSpec(None, description="No such policy within the caller's reach.")}
_INVALID = {
    422: ResponseSpec(
        None, description="The policy is not valid; `errors` names each field at fault."
    )
}
_OTHER_TENANT = {403: ResponseSpec(None, description="A tenant's key naming another tenant.")}
_PolicyBody = Annotated[
    RetentionPolicyIn,
    Body(
        title="Retention policy",
        description="The whole policy (PUT replaces every field). `tenant_id`: the tenant "
        "it is for; required with the admin key, else the caller's own. `archive_path`: a "
        "relative name under ARCHIVE_ROOT (segments of letters, digits, '.', '_', '-'; no "
        "'..'), required when `archive_enabled`.",
        examples=[Example(summary="A week, 20 GB, archived", value=_POLICY_IN_EXAMPLE)],
    ),
]
_PolicyId = FromPath[uuid.UUID]


class RetentionController(Controller):
    path = "/api/v1/retention"
    tags = ["retention"]
    dependencies = {"caller": Provide(provide_caller)}
    security = OPENAPI_SECURITY

    @get(
        "/",
        summary="List retention policies, oldest first",
        description="The admin key: every tenant's. A tenant's admin key: its own (one or "
        "none). Tenants without a policy have the defaults (see /tenant/{tenant_id}).",
        responses={
            200: example_response(
                PolicyPage,
                "A page of policies.",
                {"policies": [_POLICY_EXAMPLE], "limit": 100, "offset": 0, "has_more": False},
            )
        },
    )
    async def list_policies(
        self,
        caller: NamedDependency[Caller],
        gateway: NamedDependency[GatewayState],
        limit: PageLimit = 100,
        offset: Offset = 0,
    ) -> PolicyPage:
        return await policies.list_policies(
            gateway.pool, reach_of(caller), limit=limit, offset=offset
        )

    @post(
        "/",
        status_code=201,
        summary="Create a tenant's retention policy",
        description="One per tenant (409 on a second: replace it with PUT). Applied from "
        "the janitor's next run (every RETENTION_INTERVAL).",
        responses={
            201: _POLICY,
            **_OTHER_TENANT,
            404: ResponseSpec(None, description="No such tenant."),
            409: ResponseSpec(None, description="The tenant has a policy already."),
            **_INVALID,
        },
    )
    async def create_policy(
        self,
        caller: NamedDependency[Caller],
        gateway: NamedDependency[GatewayState],
        data: _PolicyBody,
    ) -> RetentionPolicyOut:
        return await policies.create_policy(gateway.pool, reach_of(caller), caller.actor, data)

    @get(
        "/tenant/{tenant_id:uuid}",
        summary="The retention policy in force for a tenant",
        description="Its own, or the defaults (`is_default`), with the cutoff now (rows "
        "dated before it are past the policy), its size limit in bytes and "
        "LOG_MAX_SIZE_GB.",
        responses={
            200: example_response(EffectivePolicyOut, "The policy in force.", _EFFECTIVE_EXAMPLE),
            **_OTHER_TENANT,
            404: ResponseSpec(None, description="No such tenant."),
        },
    )
    async def effective_policy(
        self,
        caller: NamedDependency[Caller],
        gateway: NamedDependency[GatewayState],
        tenant_id: FromPath[uuid.UUID],
    ) -> EffectivePolicyOut:
        return await policies.effective_policy(
            gateway.pool, reach_of(caller), tenant_id, gateway.settings, datetime.now(UTC)
        )

    @put(
        "/{policy_id:uuid}",
        summary="Replace a retention policy",
        description="A full replacement: absent optional fields take their defaults. The "
        "policy stays its tenant's.",
        responses={200: _POLICY, **_OTHER_TENANT, **_NO_POLICY, **_INVALID},
    )
    async def replace_policy(
        self,
        caller: NamedDependency[Caller],
        gateway: NamedDependency[GatewayState],
        policy_id: _PolicyId,
        data: _PolicyBody,
    ) -> RetentionPolicyOut:
        return await policies.replace_policy(
            gateway.pool, reach_of(caller), caller.actor, policy_id, data
        )

    @delete(
        "/{policy_id:uuid}",
        summary="Delete a retention policy",
        description="The tenant falls back to the defaults from the janitor's next run.",
        responses=_NO_POLICY,
    )
    async def delete_policy(
        self,
        caller: NamedDependency[Caller],
        gateway: NamedDependency[GatewayState],
        policy_id: _PolicyId,
    ) -> None:
        await policies.delete_policy(gateway.pool, reach_of(caller), caller.actor, policy_id)

    @get(
        "/status",
        summary="The janitor's retention runs: the last, the next, the recent ones",
        description="The admin key only (it covers every tenant). Runs newest first; "
        "`before_id` (the last id seen) pages back.",
        responses={
            200: example_response(
                RetentionStatusOut,
                "The last run, when the next is expected, and a page of runs.",
                {
                    "interval_seconds": 300,
                    "last_run": _RUN_EXAMPLE,
                    "next_run_at": "2024-01-15T10:35:00Z",
                    "runs": [_RUN_EXAMPLE],
                    "limit": 20,
                    "has_more": True,
                },
            ),
            403: ResponseSpec(None, description="Not the admin key."),
        },
    )
    async def retention_status(
        self,
        caller: NamedDependency[Caller],
        gateway: NamedDependency[GatewayState],
        limit: RunsLimit = 20,
        before_id: BeforeId = None,
    ) -> RetentionStatusOut:
        require_operator(caller)
        return await runs.retention_status(
            gateway.pool,
            gateway.settings.retention_interval_seconds,
            limit=limit,
            before_id=before_id,
        )
