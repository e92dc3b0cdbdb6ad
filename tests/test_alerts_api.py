"""The alert rules API: rules of the caller's tenant only, validated before anything is
stored, channel secrets write-only, open alerts resolved (and notified) when a rule is
disabled or deleted, history kept, and a dry run that counts the evaluator's window."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from services.writer.consumer import StreamConsumer
from shared.alert_events import StateChange, record_change
from shared.alerts import RULE_COLUMNS, Window, rule_from_row
from shared.redis_conn import make_redis
from shared.redis_keys import RedisKeys
from shared.settings import Settings
from tests.conftest import OTHER_TENANT, TENANT, tenant_headers
from tests.keyring import add_key, add_tenant, key_headers
from tests.routes import endpoints

SECRET = "s3cr3t-webhook-signing-key"
WEBHOOK = "https://hooks.example.com/minisource"


def rule_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "auth errors",
        "description": "errors of auth-service\nper environment",
        "filter": {"service_name": "auth-service", "min_level": "ERROR"},
        "condition": "above",
        "threshold": 5,
        "window_mins": 5,
        "severity": "critical",
        "channels": [
            {"type": "webhook", "url": WEBHOOK, "secret": SECRET},
            {"type": "slack", "url": "https://hooks.slack.example/T000/B000"},
            {"type": "email", "to": ["oncall@example.com"]},
            {"type": "alertmanager", "url": "http://alertmanager.example:9093"},
        ],
        "group_by": ["environment"],
        "cooldown_mins": 10,
        "enabled": True,
    }
    return {**body, **changes}


async def create(client: Any, tenant: uuid.UUID = TENANT, **changes: Any) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/alerts", json=rule_body(**changes), headers=tenant_headers(tenant)
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def stored_channels(db: psycopg.Connection, alert_id: str) -> list[dict[str, Any]]:
    row = db.execute("SELECT channels FROM log_alerts WHERE id = %s", (alert_id,)).fetchone()
    assert row is not None
    channels: list[dict[str, Any]] = row[0]
    return channels


async def fire(
    settings: Settings, alert_id: str, group: dict[str, str | None], count: int = 9
) -> uuid.UUID:
    """Record a group of the rule as firing, as the evaluator does: the event, its outbox
    rows and the state, in one transaction."""
    connecting = AsyncConnection.connect(settings.postgres_conninfo())
    async with await connecting as conn, conn.transaction():
        cur = await conn.execute(
            f"SELECT {RULE_COLUMNS} FROM log_alerts WHERE id = %s", (alert_id,)
        )
        row = await cur.fetchone()
        assert row is not None
        rule = rule_from_row(row)
        window = Window.ending_at(datetime.now(UTC), rule.window_mins)
        change = StateChange(rule, group, "firing", count, window, window.end)
        event_id = await record_change(conn, change, "http://minisource.test")
        await conn.execute(
            """INSERT INTO alert_states (alert_id, group_key, tenant_id, state, since,
                   last_count, open_event_id, last_fired_at)
               VALUES (%s, %s, %s, 'firing', %s, %s, %s, now())""",
            (rule.id, Jsonb(group), rule.tenant_id, window.end, count, event_id),
        )
    return event_id


# -- Rules: create, read, list, replace, delete. ----------------------------------------


async def test_a_rule_is_created_read_listed_replaced_and_deleted(client, db) -> None:
    created = await create(client)
    alert_id = created["id"]
    assert created["tenant_id"] == str(TENANT)
    written = rule_body()
    for name in ("name", "description", "filter", "condition", "threshold", "window_mins",
                 "severity", "group_by", "cooldown_mins", "enabled"):  # fmt: skip
        assert created[name] == written[name], name
    assert created["state"] == "ok" and created["firing_groups"] == []
    assert created["last_evaluation"] is None and created["last_triggered"] is None
    assert created["created_at"] == created["updated_at"]
    assert [c["type"] for c in created["channels"]] == [
        "webhook",
        "slack",
        "email",
        "alertmanager",
    ]
    assert created["channels"][1:] == written["channels"][1:]

    headers = tenant_headers()
    one = await client.get(f"/api/v1/alerts/{alert_id}", headers=headers)
    assert one.status_code == 200 and one.json() == created
    listed = await client.get("/api/v1/alerts", headers=headers)
    assert listed.json()["alerts"] == [created]

    replaced = await client.put(
        f"/api/v1/alerts/{alert_id}",
        json=rule_body(name="silence", condition="below", threshold=1, group_by=[], channels=[]),
        headers=headers,
    )
    assert replaced.status_code == 200, replaced.text
    after = replaced.json()
    assert (after["name"], after["condition"], after["threshold"]) == ("silence", "below", 1)
    assert after["group_by"] == [] and after["channels"] == []
    assert after["created_at"] == created["created_at"]
    assert after["updated_at"] > created["updated_at"]
    assert (await client.get(f"/api/v1/alerts/{alert_id}", headers=headers)).json() == after

    deleted = await client.delete(f"/api/v1/alerts/{alert_id}", headers=headers)
    assert deleted.status_code == 204
    assert (await client.get(f"/api/v1/alerts/{alert_id}", headers=headers)).status_code == 404
    assert (await client.get("/api/v1/alerts", headers=headers)).json()["alerts"] == []
    # Kept for its history, never evaluated again.
    assert db.execute(
        "SELECT deleted_at IS NOT NULL FROM log_alerts WHERE id = %s", (alert_id,)
    ).fetchone() == (True,)


async def test_defaults_fill_a_minimal_rule(client) -> None:
    response = await client.post(
        "/api/v1/alerts",
        json={"name": "any", "threshold": 1, "window_mins": 1},
        headers=tenant_headers(),
    )
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/api/v1/alerts/{response.json()['id']}"
    body = response.json()
    assert (body["condition"], body["severity"], body["enabled"]) == ("above", "warning", True)
    assert (body["filter"], body["channels"], body["group_by"]) == ({}, [], [])


async def test_a_deleted_or_unknown_rule_is_404_on_every_change(client) -> None:
    headers = tenant_headers()
    alert_id = (await create(client))["id"]
    assert (await client.delete(f"/api/v1/alerts/{alert_id}", headers=headers)).status_code == 204
    for target in (alert_id, str(uuid.uuid4())):
        for method, path, body in [
            ("GET", "", None),
            ("PUT", "", rule_body()),
            ("DELETE", "", None),
            ("POST", "/enable", None),
            ("POST", "/disable", None),
            ("POST", "/test", None),
        ]:
            response = await client.request(
                method, f"/api/v1/alerts/{target}{path}", json=body, headers=headers
            )
            assert response.status_code == 404, (method, path, response.text)
            assert response.headers["content-type"] == "application/problem+json"


# -- Secrets are write-only. --------------------------------------------------------------


async def test_channel_secrets_are_never_returned(client) -> None:
    created = await create(client)
    headers = tenant_headers()
    answers = [
        created,
        (await client.get(f"/api/v1/alerts/{created['id']}", headers=headers)).json(),
        (await client.get("/api/v1/alerts", headers=headers)).json(),
        (await client.post(f"/api/v1/alerts/{created['id']}/disable", headers=headers)).json(),
        (await client.post(f"/api/v1/alerts/{created['id']}/enable", headers=headers)).json(),
    ]
    for answer in answers:
        assert SECRET not in str(answer)
    assert created["channels"][0] == {
        "type": "webhook",
        "url": WEBHOOK,
        "secret_set": True,
        "timeout_seconds": 10.0,
    }
    schema = (await client.get("/schema/openapi.json")).text
    assert SECRET not in schema


async def test_a_put_without_the_secret_keeps_it_null_removes_it_a_value_replaces_it(
    client, db
) -> None:
    alert_id = (await create(client))["id"]
    headers = tenant_headers()
    other = {"type": "webhook", "url": "https://other.example/hook"}
    # Read, change, write back: the secret is not known to the client and stays.
    kept = await client.put(
        f"/api/v1/alerts/{alert_id}",
        json=rule_body(threshold=9, channels=[other, {"type": "webhook", "url": WEBHOOK}]),
        headers=headers,
    )
    assert kept.status_code == 200, kept.text
    assert [c["secret_set"] for c in kept.json()["channels"]] == [False, True]
    assert [c.get("secret") for c in stored_channels(db, alert_id)] == [None, SECRET]

    replaced_secret = "a-brand-new-signing-secret"
    replaced = await client.put(
        f"/api/v1/alerts/{alert_id}",
        json=rule_body(channels=[{"type": "webhook", "url": WEBHOOK, "secret": replaced_secret}]),
        headers=headers,
    )
    assert replaced.json()["channels"][0]["secret_set"] is True
    assert replaced_secret not in replaced.text
    assert stored_channels(db, alert_id)[0]["secret"] == replaced_secret

    removed = await client.put(
        f"/api/v1/alerts/{alert_id}",
        json=rule_body(channels=[{"type": "webhook", "url": WEBHOOK, "secret": None}]),
        headers=headers,
    )
    assert removed.json()["channels"][0]["secret_set"] is False
    assert stored_channels(db, alert_id)[0].get("secret") is None

    # A secret belongs to its url: a webhook moved to another url does not take it along.
    await client.put(f"/api/v1/alerts/{alert_id}", json=rule_body(), headers=headers)
    moved = await client.put(
        f"/api/v1/alerts/{alert_id}",
        json=rule_body(channels=[{"type": "webhook", "url": "https://elsewhere.example/h"}]),
        headers=headers,
    )
    assert moved.json()["channels"][0]["secret_set"] is False


async def test_delivery_errors_are_shown_without_the_secret(client, settings, db) -> None:
    alert_id = (await create(client))["id"]
    event_id = await fire(settings, alert_id, {"environment": "production"})
    db.execute(
        """UPDATE alert_notifications SET status = 'failed', attempts = 8,
               last_error = %s WHERE event_id = %s AND channel_index = 0""",
        (f"HTTP 500 from {WEBHOOK} (signed with {SECRET})", event_id),
    )
    events = await client.get(f"/api/v1/alerts/{alert_id}/events", headers=tenant_headers())
    assert SECRET not in events.text
    (event,) = events.json()["events"]
    webhook = event["notifications"][0]
    assert webhook == {
        "channel_index": 0,
        "type": "webhook",
        "status": "failed",
        "attempts": 8,
        "last_error": f"HTTP 500 from {WEBHOOK} (signed with [secret])",
        "sent_at": None,
    }


# -- Validation: 422 naming the field, nothing stored. ------------------------------------

INVALID_RULES = [
    (rule_body(color="blue"), "color"),
    (rule_body(filter={"min_level": "LOUD"}), "filter.min_level"),
    (rule_body(filter={"level": "ERROR", "colour": "red"}), "filter.colour"),
    (rule_body(filter={"start_time": "now-1h"}), "filter.start_time"),
    (rule_body(filter={"metadata": {"": "x"}}), "filter.metadata."),
    (rule_body(threshold=0), "threshold"),
    (rule_body(window_mins=0), "window_mins"),
    (rule_body(window_mins=7 * 24 * 60 + 1), "window_mins"),
    (rule_body(cooldown_mins=-1), "cooldown_mins"),
    (rule_body(condition="sideways"), "condition"),
    (rule_body(severity="loud"), "severity"),
    (rule_body(group_by=["service_name", "service_name"]), "group_by"),
    (rule_body(group_by=["message"]), "group_by[0]"),
    (rule_body(channels=[{"type": "webhook", "url": "ftp://files.example/x"}]), "channels[0].url"),
    (rule_body(channels=[{"type": "webhook", "url": "file:///etc/passwd"}]), "channels[0].url"),
    (rule_body(channels=[{"type": "slack", "url": "https://x.example/\u0000"}]), "channels[0].url"),
    (rule_body(channels=[{"type": "webhook", "url": WEBHOOK, "secret": "short"}]),
     "channels[0].secret"),
    (rule_body(channels=[{"type": "email", "to": []}]), "channels[0].to"),
    (rule_body(channels=[{"type": "pager", "url": WEBHOOK}]), "channels[0]"),
    (rule_body(description="nul\u0000byte"), "description"),
    (rule_body(name=""), "name"),
    ({"threshold": 1, "window_mins": 1}, "name"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "field"), INVALID_RULES)
async def test_an_invalid_rule_is_422_naming_the_field_and_nothing_is_stored(
    client, db, body, field
) -> None:
    response = await client.post("/api/v1/alerts", json=body, headers=tenant_headers())
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    fields = [e["field"] for e in response.json()["errors"]]
    assert any(f.startswith(field) for f in fields), fields
    assert db.execute("SELECT count(*) FROM log_alerts").fetchone() == (0,)


async def test_an_invalid_replacement_changes_nothing(client, db) -> None:
    created = await create(client)
    headers = tenant_headers()
    before = db.execute("SELECT * FROM log_alerts").fetchall()
    for body, _ in INVALID_RULES:
        response = await client.put(f"/api/v1/alerts/{created['id']}", json=body, headers=headers)
        assert response.status_code == 422, (body, response.text)
    assert db.execute("SELECT * FROM log_alerts").fetchall() == before


# -- Listing: pages and filters. ----------------------------------------------------------


async def test_rules_are_listed_oldest_first_by_offset_or_cursor(client) -> None:
    headers = tenant_headers()
    ids = [(await create(client, name=f"rule {i}"))["id"] for i in range(5)]
    first = (await client.get("/api/v1/alerts", params={"limit": 2}, headers=headers)).json()
    assert [a["id"] for a in first["alerts"]] == ids[:2]
    assert first["has_more"] is True and first["next_cursor"]
    walked, page = [a["id"] for a in first["alerts"]], first
    while page["has_more"]:
        page = (
            await client.get(
                "/api/v1/alerts",
                params={"limit": 2, "cursor": page["next_cursor"]},
                headers=headers,
            )
        ).json()
        walked += [a["id"] for a in page["alerts"]]
    assert walked == ids and page["next_cursor"] is None
    by_offset = await client.get(
        "/api/v1/alerts", params={"limit": 2, "offset": 3}, headers=headers
    )
    assert [a["id"] for a in by_offset.json()["alerts"]] == ids[3:]
    assert by_offset.json()["has_more"] is False


async def test_paging_parameters_are_checked(client) -> None:
    headers = tenant_headers()
    await create(client)
    await create(client)
    cursor = (await client.get("/api/v1/alerts", params={"limit": 1}, headers=headers)).json()[
        "next_cursor"
    ]
    cases = [
        ({"cursor": cursor, "offset": 1}, 400, "offset"),
        ({"cursor": "not-a-cursor"}, 400, "cursor"),
        ({"limit": 0}, 400, "limit"),
        ({"limit": 1001}, 400, "limit"),
        ({"state": "burning"}, 400, "state"),
        ({"enabled": "maybe"}, 400, "enabled"),
    ]
    for params, status, field in cases:
        response = await client.get("/api/v1/alerts", params=params, headers=headers)
        assert response.status_code == status, (params, response.text)
        assert field in response.text
    alert_id = (await create(client))["id"]
    # A rules cursor is not an events cursor.
    events = await client.get(
        f"/api/v1/alerts/{alert_id}/events", params={"cursor": cursor}, headers=headers
    )
    assert events.status_code == 400


async def test_rules_are_filtered_by_enabled_and_state(client, settings) -> None:
    headers = tenant_headers()
    quiet = (await create(client, name="quiet"))["id"]
    firing = (await create(client, name="firing"))["id"]
    off = (await create(client, name="off", enabled=False))["id"]
    await fire(settings, firing, {"environment": "production"})
    await fire(settings, firing, {"environment": "staging"})

    async def names(**params: Any) -> list[str]:
        response = await client.get("/api/v1/alerts", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return [a["name"] for a in response.json()["alerts"]]

    assert await names() == ["quiet", "firing", "off"]
    assert await names(enabled="true") == ["quiet", "firing"]
    assert await names(enabled="false") == ["off"]
    assert await names(state="firing") == ["firing"]
    assert await names(state="ok") == ["quiet", "off"]
    assert await names(state="ok", enabled="true") == ["quiet"]
    rule = (await client.get(f"/api/v1/alerts/{firing}", headers=headers)).json()
    assert rule["state"] == "firing"
    assert [g["group"] for g in rule["firing_groups"]] == [
        {"environment": "production"},
        {"environment": "staging"},
    ]
    assert all(g["last_count"] == 9 for g in rule["firing_groups"])
    assert {quiet, off}.isdisjoint({firing})


# -- Disable, enable, delete: open alerts are resolved, history is kept. ------------------


async def test_deleting_a_firing_rule_resolves_it_and_keeps_its_events(client, settings, db):
    alert_id = (await create(client))["id"]
    headers = tenant_headers()
    group = {"environment": "production"}
    firing_event = await fire(settings, alert_id, group, count=7)

    deleted = await client.delete(f"/api/v1/alerts/{alert_id}", headers=headers)
    assert deleted.status_code == 204, deleted.text
    assert (await client.get(f"/api/v1/alerts/{alert_id}", headers=headers)).status_code == 404

    events = await client.get(f"/api/v1/alerts/{alert_id}/events", headers=headers)
    assert events.status_code == 200, events.text
    resolved, fired = events.json()["events"]  # newest first
    assert (fired["id"], fired["kind"], fired["resolved_at"]) == (str(firing_event), "firing", None)
    assert resolved["kind"] == "resolved" and resolved["reason"] == "rule deleted"
    assert resolved["group"] == group and resolved["observed_count"] == 7
    assert resolved["started_at"] == fired["started_at"] and resolved["resolved_at"]
    assert (resolved["threshold"], resolved["condition"], resolved["window_mins"]) == (
        5,
        "above",
        5,
    )
    # One notification per channel for the resolution too (the pager clears), pending for
    # the sender; only position, type and delivery are shown.
    assert [(n["channel_index"], n["type"], n["status"]) for n in resolved["notifications"]] == [
        (0, "webhook", "pending"),
        (1, "slack", "pending"),
        (2, "email", "pending"),
        (3, "alertmanager", "pending"),
    ]
    assert "hooks." not in events.text and "oncall@" not in events.text
    assert db.execute(
        "SELECT count(*) FROM alert_states WHERE alert_id = %s", (alert_id,)
    ).fetchone() == (0,)
    assert db.execute(
        "SELECT count(*) FROM alert_notifications WHERE alert_id = %s", (alert_id,)
    ).fetchone() == (8,)


async def test_disable_resolves_open_alerts_and_enable_only_enables(client, settings, db):
    alert_id = (await create(client))["id"]
    headers = tenant_headers()
    await fire(settings, alert_id, {"environment": "production"})
    await fire(settings, alert_id, {"environment": "staging"})

    disabled = await client.post(f"/api/v1/alerts/{alert_id}/disable", headers=headers)
    assert disabled.status_code == 200, disabled.text
    assert (disabled.json()["enabled"], disabled.json()["state"]) == (False, "ok")
    kinds = db.execute(
        "SELECT kind, reason, group_key->>'environment' FROM alert_events "
        "WHERE alert_id = %s ORDER BY kind, 3",
        (alert_id,),
    ).fetchall()
    assert kinds == [
        ("firing", "", "production"),
        ("firing", "", "staging"),
        ("resolved", "rule disabled", "production"),
        ("resolved", "rule disabled", "staging"),
    ]
    assert db.execute(
        "SELECT DISTINCT state FROM alert_states WHERE alert_id = %s", (alert_id,)
    ).fetchall() == [("ok",)]

    # Nothing open: disabling again, and enabling, record nothing.
    again = await client.post(f"/api/v1/alerts/{alert_id}/disable", headers=headers)
    assert again.json()["updated_at"] == disabled.json()["updated_at"]
    enabled = await client.post(f"/api/v1/alerts/{alert_id}/enable", headers=headers)
    assert (enabled.json()["enabled"], enabled.json()["state"]) == (True, "ok")
    assert db.execute(
        "SELECT count(*) FROM alert_events WHERE alert_id = %s", (alert_id,)
    ).fetchone() == (4,)


async def test_a_put_keeps_states_and_a_put_disabling_resolves_them(client, settings, db):
    alert_id = (await create(client))["id"]
    headers = tenant_headers()
    await fire(settings, alert_id, {"environment": "production"})
    # Changes take effect at the next evaluation, which compares with the kept state:
    # nothing is resolved or fired now.
    changed = await client.put(
        f"/api/v1/alerts/{alert_id}", json=rule_body(threshold=50, window_mins=15), headers=headers
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["state"] == "firing"
    assert db.execute(
        "SELECT count(*) FROM alert_events WHERE alert_id = %s", (alert_id,)
    ).fetchone() == (1,)

    off = await client.put(
        f"/api/v1/alerts/{alert_id}", json=rule_body(enabled=False), headers=headers
    )
    assert (off.json()["enabled"], off.json()["state"]) == (False, "ok")
    resolved = db.execute(
        "SELECT reason, threshold, window_mins FROM alert_events "
        "WHERE alert_id = %s AND kind = 'resolved'",
        (alert_id,),
    ).fetchall()
    # Recorded as the rule was while it fired.
    assert resolved == [("rule disabled", 50, 15)]


async def test_events_are_paged_newest_first(client, settings) -> None:
    alert_id = (await create(client))["id"]
    headers = tenant_headers()
    fired = [await fire(settings, alert_id, {"environment": f"env-{i}"}) for i in range(5)]
    first = (
        await client.get(f"/api/v1/alerts/{alert_id}/events", params={"limit": 2}, headers=headers)
    ).json()
    ids, page = [e["id"] for e in first["events"]], first
    while page["has_more"]:
        page = (
            await client.get(
                f"/api/v1/alerts/{alert_id}/events",
                params={"limit": 2, "cursor": page["next_cursor"]},
                headers=headers,
            )
        ).json()
        ids += [e["id"] for e in page["events"]]
    assert ids == [str(e) for e in reversed(fired)]
    by_offset = await client.get(
        f"/api/v1/alerts/{alert_id}/events", params={"offset": 4}, headers=headers
    )
    assert [e["id"] for e in by_offset.json()["events"]] == [str(fired[0])]
    unknown = await client.get(f"/api/v1/alerts/{uuid.uuid4()}/events", headers=headers)
    assert unknown.status_code == 404


# -- Tenants and scopes. ------------------------------------------------------------------


async def test_another_tenants_rule_events_and_dry_run_are_404(client, settings, db) -> None:
    alert_id = (await create(client))["id"]
    await fire(settings, alert_id, {"environment": "production"})
    before = [
        db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
        for table in ("log_alerts", "alert_states", "alert_events", "alert_notifications")
    ]
    theirs = tenant_headers(OTHER_TENANT)
    for method, path, body in [
        ("GET", "", None),
        ("PUT", "", rule_body(name="hijacked")),
        ("DELETE", "", None),
        ("POST", "/enable", None),
        ("POST", "/disable", None),
        ("GET", "/events", None),
        ("POST", "/test", None),
    ]:
        response = await client.request(
            method, f"/api/v1/alerts/{alert_id}{path}", json=body, headers=theirs
        )
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["detail"] == f"no alert rule {alert_id}"
    listed = await client.get("/api/v1/alerts", headers=theirs)
    assert listed.json()["alerts"] == []
    firing = await client.get("/api/v1/alerts", params={"state": "firing"}, headers=theirs)
    assert firing.json()["alerts"] == []
    after = [
        db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
        for table in ("log_alerts", "alert_states", "alert_events", "alert_notifications")
    ]
    assert after == before
    mine = await client.get(f"/api/v1/alerts/{alert_id}", headers=tenant_headers())
    assert mine.json()["state"] == "firing"


async def test_alert_routes_need_the_alerts_scope(api_client, api_settings, admin_key) -> None:
    tenant = await add_tenant(api_settings)
    logs_only = await add_key(api_settings, tenant, "ingest", "query")
    alerts_only = await add_key(api_settings, tenant, "alerts")
    routes = [e for e in endpoints(api_client.app) if e.template.startswith("/api/v1/alerts")]
    assert len(routes) == 9
    for endpoint in routes:
        response = await api_client.request(
            endpoint.method, endpoint.url(), json=rule_body(), headers=key_headers(logs_only)
        )
        assert response.status_code == 403, (endpoint, response.text)
        assert "'alerts' scope" in response.json()["detail"]
    created = await api_client.post(
        "/api/v1/alerts", json=rule_body(), headers=key_headers(alerts_only)
    )
    assert created.status_code == 201, created.text
    assert created.json()["tenant_id"] == str(tenant)
    # An admin key acts for the tenant it names.
    as_admin = await api_client.get(
        f"/api/v1/alerts/{created.json()['id']}", headers=key_headers(admin_key, tenant)
    )
    assert as_admin.status_code == 200
    # The alerts scope alone reads no logs.
    logs = await api_client.get("/api/v1/logs", headers=key_headers(alerts_only))
    assert logs.status_code == 403


# -- The dry run: the evaluator's window and counts, nothing changed. ---------------------


async def _ingest(client: Any, tenant: uuid.UUID, entries: list[dict[str, Any]]) -> None:
    response = await client.post(
        "/api/v1/logs/batch", json={"entries": entries}, headers=tenant_headers(tenant)
    )
    assert response.status_code == 202, response.text


def _entries(service: str, level: str, n: int, at: datetime, **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "service_name": service,
            "level": level,
            "message": f"{service} {level} {i}",
            "timestamp": (at + timedelta(seconds=i)).isoformat(),
            **extra,
        }
        for i in range(n)
    ]


async def _trim_acknowledged(settings: Settings) -> None:
    """Trim what the writer acknowledged (it does so at most once a second by itself):
    the committed watermark then stands at now."""
    redis = make_redis(settings)
    try:
        keys = RedisKeys.from_settings(settings)
        await StreamConsumer(redis, keys, "test-trim", 60_000).trim_acknowledged()
    finally:
        await redis.aclose()


async def test_the_dry_run_counts_each_group_in_the_window_ending_at_the_watermark(
    client, writer, settings, db
) -> None:
    at = datetime.now(UTC) - timedelta(minutes=3)
    await _ingest(
        client,
        TENANT,
        _entries("checkout", "ERROR", 6, at)
        + _entries("checkout", "WARN", 4, at)
        + _entries("search", "FATAL", 3, at, message="boom")
        + _entries("checkout", "ERROR", 2, at - timedelta(minutes=30)),  # before the window
    )
    await _ingest(client, OTHER_TENANT, _entries("checkout", "ERROR", 50, at))
    await writer.drain()
    await _trim_acknowledged(settings)
    rule = await create(
        client,
        filter={"min_level": "ERROR"},
        group_by=["service_name"],
        window_mins=10,
        threshold=5,
    )
    before = datetime.now(UTC)
    response = await client.post(f"/api/v1/alerts/{rule['id']}/test", headers=tenant_headers())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["groups"] == [
        {"group": {"service_name": "checkout"}, "count": 6, "would_fire": True},
        {"group": {"service_name": "search"}, "count": 3, "would_fire": False},
    ]
    assert (body["would_fire"], body["from_rollups"]) == (True, True)
    assert (body["condition"], body["threshold"]) == ("above", 5)
    watermark = datetime.fromisoformat(body["watermark"])
    assert before - timedelta(seconds=5) <= watermark <= datetime.now(UTC)
    # The window ends exactly at the watermark (with empty streams: now).
    end = datetime.fromisoformat(body["window_end"])
    assert end == watermark
    assert datetime.fromisoformat(body["window_start"]) == end - timedelta(minutes=10)

    # A search term counts raw rows; a `below` rule without group_by has its one group.
    searching = await create(client, filter={"search": "boom"}, group_by=[], threshold=3)
    raw = (
        await client.post(f"/api/v1/alerts/{searching['id']}/test", headers=tenant_headers())
    ).json()
    assert raw["from_rollups"] is False
    assert raw["groups"] == [{"group": {}, "count": 3, "would_fire": True}]
    silent = await create(
        client, filter={"service_name": "gone"}, group_by=[], condition="below", threshold=1
    )
    none = (
        await client.post(f"/api/v1/alerts/{silent['id']}/test", headers=tenant_headers())
    ).json()
    assert none["groups"] == [{"group": {}, "count": 0, "would_fire": True}]

    # Nothing was changed by any dry run.
    for table in ("alert_states", "alert_events", "alert_notifications"):
        assert db.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
    assert db.execute(
        "SELECT count(*) FROM log_alerts WHERE last_evaluation IS NOT NULL "
        "OR last_triggered IS NOT NULL OR evaluated_tick <> 0"
    ).fetchone() == (0,)


async def test_the_dry_run_window_ends_before_a_backlog(client, writer, settings) -> None:
    """Accepted but not yet stored: the watermark stays at the oldest waiting message,
    so the window never reaches into data still on its way."""
    rule = await create(client, filter={}, group_by=[], window_mins=5, threshold=1)
    sent = datetime.now(UTC)
    await _ingest(client, TENANT, _entries("late", "ERROR", 1, sent))
    accepted = datetime.now(UTC)
    queued = await client.post(f"/api/v1/alerts/{rule['id']}/test", headers=tenant_headers())
    waiting = datetime.fromisoformat(queued.json()["watermark"])
    assert sent - timedelta(milliseconds=5) <= waiting <= accepted
    await writer.drain()
    await _trim_acknowledged(settings)
    trimmed = datetime.now(UTC)
    stored = await client.post(f"/api/v1/alerts/{rule['id']}/test", headers=tenant_headers())
    assert datetime.fromisoformat(stored.json()["watermark"]) >= trimmed


async def test_the_dry_run_lists_stored_groups_that_count_nothing_now(client, settings) -> None:
    rule = await create(
        client, filter={"service_name": "gone"}, group_by=["service_name"], condition="below"
    )
    await fire(settings, rule["id"], {"service_name": "gone"}, count=0)
    body = (await client.post(f"/api/v1/alerts/{rule['id']}/test", headers=tenant_headers())).json()
    # The evaluator looks at a silent group too: that is how a `below` rule sees silence.
    assert body["groups"] == [{"group": {"service_name": "gone"}, "count": 0, "would_fire": True}]
