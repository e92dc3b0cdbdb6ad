"""/api/v1/alerts: a tenant's alert rules (scope `alerts`, or `admin`).

A rule belongs to the caller's tenant; another tenant's rule id is 404, as an unknown
one. Bodies are `AlertRuleIn` (unknown fields refused) and are checked further by
shared.alerts.check_rule; either refusal is a 422 naming the field, and nothing is
stored. Channel secrets are write-only. What each operation does to open alerts, and
in which transaction, is in services/gateway/alerts/rules.py.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, Response, delete, get, post, put
from litestar.di import NamedDependency, Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import Body, FromPath, Parameter, QueryParameter

from services.gateway.alerts import rules
from services.gateway.alerts.models import (
    AlertPage,
    AlertRuleOut,
    AlertTestOut,
    EventPage,
    RuleState,
)
from services.gateway.alerts.pages import DEFAULT_LIMIT, CursorParam, Limit, Offset, page_of
from services.gateway.auth import OPENAPI_SECURITY, Caller, provide_caller
from services.gateway.openapi import example_response
from services.gateway.state import GatewayState
from shared.alerts import AlertRuleIn
from shared.redis_keys import RedisKeys

_RULE_IN_EXAMPLE = {
    "name": "auth errors",
    "description": "Page the on-call when auth-service logs errors",
    "filter": {"service_name": "auth-service", "min_level": "ERROR"},
    "condition": "above",
    "threshold": 5,
    "window_mins": 5,
    "severity": "critical",
    "group_by": ["environment"],
    "cooldown_mins": 10,
    "channels": [
        {
            "type": "webhook",
            "url": "https://hooks.example.com/minisource",
            "secret": "a-long-random-secret-value",
        },
        {"type": "email", "to": ["oncall@example.com"]},
    ],
    "enabled": True,
}
_RULE_OUT_EXAMPLE = {
    "id": "5b3f1c2e-8d4a-4f6b-9c1d-2e3f4a5b6c7d",
    "tenant_id": "123e4567-e89b-12d3-a456-426614174000",
    **_RULE_IN_EXAMPLE,
    "channels": [
        {
            "type": "webhook",
            "url": "https://hooks.example.com/minisource",
            "secret_set": True,
            "timeout_seconds": 10.0,
        },
        {"type": "email", "to": ["oncall@example.com"]},
    ],
    "last_triggered": "2024-01-15T10:31:00.015Z",
    "created_at": "2024-01-15T09:00:00Z",
    "updated_at": "2024-01-15T09:00:00Z",
    "state": "firing",
    "firing_groups": [
        {
            "group": {"environment": "production"},
            "since": "2024-01-15T10:30:59.880Z",
            "last_count": 7,
        }
    ],
    "last_evaluation": {
        "at": "2024-01-15T10:31:30.012Z",
        "tick": 1705314690,
        "window_start": "2024-01-15T10:26:29.870Z",
        "window_end": "2024-01-15T10:31:29.870Z",
        "watermark": "2024-01-15T10:31:29.870Z",
        "from_rollups": True,
        "groups": [
            {
                "group": {"environment": "production"},
                "count": 7,
                "state": "firing",
                "fires": True,
            }
        ],
        "groups_total": 1,
    },
}
_EVENT_EXAMPLE = {
    "id": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
    "alert_id": "5b3f1c2e-8d4a-4f6b-9c1d-2e3f4a5b6c7d",
    "kind": "firing",
    "group": {"environment": "production"},
    "observed_count": 7,
    "threshold": 5,
    "condition": "above",
    "window_mins": 5,
    "window_start": "2024-01-15T10:25:59.880Z",
    "window_end": "2024-01-15T10:30:59.880Z",
    "started_at": "2024-01-15T10:30:59.880Z",
    "resolved_at": None,
    "reason": "",
    "created_at": "2024-01-15T10:31:02Z",
    "notifications": [
        {
            "channel_index": 0,
            "type": "webhook",
            "status": "sent",
            "attempts": 1,
            "last_error": None,
            "sent_at": "2024-01-15T10:31:03Z",
        },
        {
            "channel_index": 1,
            "type": "email",
            "status": "pending",
            "attempts": 2,
            "last_error": "SMTP 451: try again later",
            "sent_at": None,
        },
    ],
}
_TEST_EXAMPLE = {
    "alert_id": "5b3f1c2e-8d4a-4f6b-9c1d-2e3f4a5b6c7d",
    "condition": "above",
    "threshold": 5,
    "window_start": "2024-01-15T10:26:12.250Z",
    "window_end": "2024-01-15T10:31:12.250Z",
    "watermark": "2024-01-15T10:31:12.250Z",
    "from_rollups": True,
    "would_fire": True,
    "groups": [
        {"group": {"environment": "production"}, "count": 7, "would_fire": True},
        {"group": {"environment": "staging"}, "count": 1, "would_fire": False},
    ],
}


_RULE = example_response(
    AlertRuleOut, "The rule, its state and last evaluation.", _RULE_OUT_EXAMPLE
)
# Error answers are problem JSON (services/gateway/openapi.py gives them the schema).
_NO_RULE = {
    404: ResponseSpec(None, description="No such rule in the caller's tenant (or deleted).")
}
_INVALID = {
    422: ResponseSpec(
        None, description="The rule is not valid; `errors` names each field at fault."
    )
}
_RuleBody = Annotated[
    AlertRuleIn,
    Body(
        title="Alert rule",
        description="The whole rule (PUT replaces every field). A webhook without `secret` "
        "keeps the stored secret of the webhook with the same url; `null` removes it.",
        examples=[Example(summary="Errors of a service, per environment", value=_RULE_IN_EXAMPLE)],
    ),
]
_AlertId = FromPath[uuid.UUID]


class AlertsController(Controller):
    path = "/api/v1/alerts"
    tags = ["alerts"]
    dependencies = {"caller": Provide(provide_caller)}
    security = OPENAPI_SECURITY

    @get(
        "/",
        summary="List alert rules, oldest first",
        description="Paged by limit and offset, or by `cursor` (the previous page's "
        "next_cursor). `enabled` and `state` (ok or firing) narrow the list.",
        responses={
            200: example_response(
                AlertPage,
                "A page of rules.",
                {
                    "alerts": [_RULE_OUT_EXAMPLE],
                    "limit": 100,
                    "offset": 0,
                    "has_more": False,
                    "next_cursor": None,
                },
            )
        },
    )
    async def list_alerts(
        self,
        caller: NamedDependency[Caller],
        gateway: NamedDependency[GatewayState],
        enabled: Annotated[
            bool | None, Parameter(description="Only enabled (or disabled) rules.")
        ] = None,
        alert_state: Annotated[
            RuleState | None,
            QueryParameter(name="state", description="Only rules firing now, or only the others."),
        ] = None,
        limit: Limit = DEFAULT_LIMIT,
        offset: Offset = 0,
        cursor: CursorParam = None,
    ) -> AlertPage:
        caller.require("alerts")
        page = page_of("rules", limit, offset, cursor)
        return await rules.list_rules(
            gateway.pool, caller.tenant_id, page, enabled=enabled, state=alert_state
        )

    @post(
        "/",
        status_code=201,
        summary="Create an alert rule",
        description="Evaluated from the next evaluation on (every ALERT_EVAL_INTERVAL).",
        responses={201: _RULE, **_INVALID},
    )
    async def create_alert(
        self,
        caller: NamedDependency[Caller],
        gateway: NamedDependency[GatewayState],
        data: _RuleBody,
    ) -> Response[AlertRuleOut]:
        caller.require("alerts")
        created = await rules.create_rule(gateway.pool, caller.tenant_id, data)
        return Response(
            created, status_code=201, headers={"Location": f"/api/v1/alerts/{created.id}"}
        )

    @get(
        "/{alert_id:uuid}",
        summary="Get an alert rule and its state",
        responses={200: _RULE, **_NO_RULE},
    )
    async def get_alert(
        self,
        caller: NamedDependency[Caller],
        gateway: NamedDependency[GatewayState],
        alert_id: _AlertId,
    ) -> AlertRuleOut:
        caller.require("alerts")
        return await rules.read_rule(gateway.pool, caller.tenant_id, alert_id)

    @put(
        "/{alert_id:uuid}",
        summary="Replace an alert rule",
        description="A full replacement, effective at the next evaluation; current "
        "states are kept. `enabled: false` resolves open alerts as disable does.",
        responses={200: _RULE, **_NO_RULE, **_INVALID},
    )
    async def replace_alert(
        self,
        caller: NamedDependency[Caller],
        gateway: NamedDependency[GatewayState],
        alert_id: _AlertId,
        data: _RuleBody,
    ) -> AlertRuleOut:
        caller.require("alerts")
        return await rules.replace_rule(
            gateway.pool, caller.tenant_id, alert_id, data, gateway.settings.public_base_url
        )

    @delete(
        "/{alert_id:uuid}",
        summary="Delete an alert rule",
        description="Open alerts are resolved (reason `rule deleted`, notified); the rule "
        "is gone from then on, its events stay readable under /events.",
        responses=_NO_RULE,
    )
    async def delete_alert(
        self,
        caller: NamedDependency[Caller],
        gateway: NamedDependency[GatewayState],
        alert_id: _AlertId,
    ) -> None:
        caller.require("alerts")
        await rules.delete_rule(
            gateway.pool, caller.tenant_id, alert_id, gateway.settings.public_base_url
        )

    @post(
        "/{alert_id:uuid}/enable",
        status_code=200,
        summary="Enable an alert rule",
        responses={200: _RULE, **_NO_RULE},
    )
    async def enable_alert(
        self,
        caller: NamedDependency[Caller],
        gateway: NamedDependency[GatewayState],
        alert_id: _AlertId,
    ) -> AlertRuleOut:
        caller.require("alerts")
        return await rules.enable_rule(gateway.pool, caller.tenant_id, alert_id)

    @post(
        "/{alert_id:uuid}/disable",
        status_code=200,
        summary="Disable an alert rule",
        description="Open alerts are resolved (reason `rule disabled`, notified).",
        responses={200: _RULE, **_NO_RULE},
    )
    async def disable_alert(
        self,
        caller: NamedDependency[Caller],
        gateway: NamedDependency[GatewayState],
        alert_id: _AlertId,
    ) -> AlertRuleOut:
        caller.require("alerts")
        return await rules.disable_rule(
            gateway.pool, caller.tenant_id, alert_id, gateway.settings.public_base_url
        )

    @get(
        "/{alert_id:uuid}/events",
        summary="An alert rule's firing and resolved events, newest first",
        description="Each with its notifications' delivery (never a channel's url or "
        "secret). Still readable after the rule is deleted.",
        responses={
            200: example_response(
                EventPage,
                "A page of events.",
                {
                    "events": [_EVENT_EXAMPLE],
                    "limit": 100,
                    "offset": 0,
                    "has_more": False,
                    "next_cursor": None,
                },
            ),
            **_NO_RULE,
        },
    )
    async def alert_events(
        self,
        caller: NamedDependency[Caller],
        gateway: NamedDependency[GatewayState],
        alert_id: _AlertId,
        limit: Limit = DEFAULT_LIMIT,
        offset: Offset = 0,
        cursor: CursorParam = None,
    ) -> EventPage:
        caller.require("alerts")
        page = page_of("events", limit, offset, cursor)
        return await rules.list_events(gateway.pool, caller.tenant_id, alert_id, page)

    @post(
        "/{alert_id:uuid}/test",
        status_code=200,
        summary="Count an alert rule's window now, changing nothing",
        description="The window the evaluator would count now (window_mins ending at the "
        "committed watermark), the count of each group and whether it would fire. No "
        "state, event or notification is changed.",
        responses={
            200: example_response(AlertTestOut, "What the rule sees now.", _TEST_EXAMPLE),
            **_NO_RULE,
        },
    )
    async def test_alert(
        self,
        caller: NamedDependency[Caller],
        gateway: NamedDependency[GatewayState],
        alert_id: _AlertId,
    ) -> AlertTestOut:
        caller.require("alerts")
        return await rules.dry_run(
            gateway.query_guard,
            gateway.redis,
            RedisKeys.from_settings(gateway.settings),
            caller.tenant_id,
            alert_id,
        )
