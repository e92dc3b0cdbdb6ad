"""The retention policies API: one policy per tenant, managed by the admin key for any
tenant and by a tenant's admin key for its own only; the policy in force (its own or the
defaults); archive paths that stay under ARCHIVE_ROOT; nothing stored on a refusal; and
the janitor's runs for the admin key only."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient
from psycopg.types.json import Jsonb

from services.gateway.app import create_app
from shared.db import make_pool
from shared.retention import GIB, retention_cutoff
from shared.settings import Settings
from tests.conftest import tenant_headers
from tests.keyring import add_key, add_tenant, key_headers
from tests.routes import endpoints

RETENTION = "/api/v1/retention"


def policy_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "retention_days": 7,
        "max_size_gb": 20,
        "archive_enabled": True,
        "archive_path": "cold/acme",
    }
    return {**body, **changes}


async def create(client: Any, headers: dict[str, str], **changes: Any) -> dict[str, Any]:
    response = await client.post(RETENTION, json=policy_body(**changes), headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def stored(db: psycopg.Connection) -> list[tuple[Any, ...]]:
    return db.execute("SELECT * FROM log_retention_policies ORDER BY created_at, id").fetchall()


def audited(db: psycopg.Connection) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT action, tenant_id, target_id, details FROM admin_audit "
        "WHERE action LIKE 'retention.%' ORDER BY id"
    ).fetchall()


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    return body


def as_time(value: str) -> datetime:
    return datetime.fromisoformat(value)


# -- Create, read, list, replace, delete. ------------------------------------------------


async def test_a_policy_is_created_read_listed_replaced_and_deleted(
    api_client, api_settings, admin_key, db
) -> None:
    tenant = await add_tenant(api_settings)
    admin = key_headers(admin_key)  # no X-Tenant-ID: the policy names its tenant
    created = await create(api_client, admin, tenant_id=str(tenant))
    assert set(created) == {
        "id", "tenant_id", "retention_days", "max_size_gb", "archive_enabled",
        "archive_path", "created_at", "updated_at",
    }  # fmt: skip
    assert created["tenant_id"] == str(tenant)
    assert (created["retention_days"], created["max_size_gb"]) == (7, 20.0)
    assert (created["archive_enabled"], created["archive_path"]) == (True, "cold/acme")
    assert created["created_at"] == created["updated_at"]

    listed = await api_client.get(RETENTION, headers=admin)
    assert listed.json() == {"policies": [created], "limit": 100, "offset": 0, "has_more": False}
    effective = (await api_client.get(f"{RETENTION}/tenant/{tenant}", headers=admin)).json()
    assert effective["is_default"] is False and effective["id"] == created["id"]
    assert effective["retention_days"] == 7 and effective["archive_path"] == "cold/acme"

    # PUT replaces every field: what it leaves out takes its default.
    replaced = await api_client.put(
        f"{RETENTION}/{created['id']}", json={"retention_days": 90}, headers=admin
    )
    assert replaced.status_code == 200, replaced.text
    after = replaced.json()
    assert after["id"] == created["id"] and after["tenant_id"] == str(tenant)
    assert after["retention_days"] == 90 and after["max_size_gb"] is None
    assert after["archive_enabled"] is False and after["archive_path"] is None
    assert after["created_at"] == created["created_at"]
    assert as_time(after["updated_at"]) > as_time(created["updated_at"])

    deleted = await api_client.delete(f"{RETENTION}/{created['id']}", headers=admin)
    assert deleted.status_code == 204, deleted.text
    assert stored(db) == []
    fallback = (await api_client.get(f"{RETENTION}/tenant/{tenant}", headers=admin)).json()
    assert fallback["is_default"] is True and fallback["id"] is None
    again = await api_client.delete(f"{RETENTION}/{created['id']}", headers=admin)
    problem(again, 404)

    actions = [(a, t, target) for a, t, target, _ in audited(db)]
    assert actions == [
        ("retention.create", tenant, created["id"]),
        ("retention.replace", tenant, created["id"]),
        ("retention.delete", tenant, created["id"]),
    ]
    replace_details = audited(db)[1][3]
    assert replace_details["retention_days"] == 90
    assert replace_details["before"]["retention_days"] == 7


async def test_a_second_policy_for_a_tenant_is_409_and_changes_nothing(
    api_client, api_settings, admin_key, db
) -> None:
    tenant = await add_tenant(api_settings)
    own = key_headers(await add_key(api_settings, tenant, "admin"))
    first = await create(api_client, own)
    before = stored(db)
    for headers, body in [
        (own, policy_body(retention_days=1)),
        (key_headers(admin_key), policy_body(retention_days=1, tenant_id=str(tenant))),
    ]:
        refused = problem(await api_client.post(RETENTION, json=body, headers=headers), 409)
        assert refused["policy_id"] == first["id"]
        assert "PUT" in refused["detail"]
    assert stored(db) == before
    assert len(audited(db)) == 1


async def test_policies_are_listed_oldest_first_and_paged(
    api_client, api_settings, admin_key
) -> None:
    admin = key_headers(admin_key)
    made = []
    for _ in range(3):
        tenant = await add_tenant(api_settings)
        made.append((await create(api_client, admin, tenant_id=str(tenant)))["id"])
    first = (await api_client.get(RETENTION, params={"limit": 2}, headers=admin)).json()
    assert [p["id"] for p in first["policies"]] == made[:2] and first["has_more"] is True
    rest = (await api_client.get(RETENTION, params={"limit": 2, "offset": 2}, headers=admin)).json()
    assert [p["id"] for p in rest["policies"]] == made[2:] and rest["has_more"] is False
    for params in ({"limit": 0}, {"limit": 1001}, {"offset": -1}):
        problem(await api_client.get(RETENTION, params=params, headers=admin), 400)


# -- The policy in force. ----------------------------------------------------------------


async def test_without_a_policy_the_defaults_are_in_force_marked_as_such(
    settings: Settings,
) -> None:
    config = replace(settings, auth_mode="api_key", log_retention_days=12, log_max_size_gb=7.5)
    tenant = await add_tenant(config)
    key = await add_key(config, tenant, "admin")
    async with AsyncTestClient(app=create_app(config)) as client:
        before = retention_cutoff(datetime.now(UTC), 12)
        response = await client.get(f"{RETENTION}/tenant/{tenant}", headers=key_headers(key))
        after = retention_cutoff(datetime.now(UTC), 12)
    assert response.status_code == 200, response.text
    effective = response.json()
    assert as_time(effective.pop("cutoff")) in (before, after)
    assert effective == {
        "tenant_id": str(tenant),
        "is_default": True,
        "id": None,
        "retention_days": 12,
        "max_size_gb": None,
        "archive_enabled": False,
        "archive_path": None,
        "created_at": None,
        "updated_at": None,
        "max_size_bytes": None,
        "global_max_size_gb": 7.5,
    }


async def test_with_a_policy_its_own_is_in_force(api_client, api_settings, admin_key) -> None:
    tenant = await add_tenant(api_settings)
    admin = key_headers(admin_key)
    created = await create(api_client, admin, tenant_id=str(tenant), max_size_gb=1.5)
    before = retention_cutoff(datetime.now(UTC), 7)
    effective = (await api_client.get(f"{RETENTION}/tenant/{tenant}", headers=admin)).json()
    after = retention_cutoff(datetime.now(UTC), 7)
    assert as_time(effective["cutoff"]) in (before, after)
    assert as_time(effective["cutoff"]).time() == datetime.min.time()  # midnight UTC
    assert effective["is_default"] is False
    assert effective["max_size_gb"] == 1.5 and effective["max_size_bytes"] == int(1.5 * GIB)
    assert effective["global_max_size_gb"] == api_settings.log_max_size_gb
    for name in ("id", "retention_days", "archive_enabled", "archive_path", "created_at"):
        assert effective[name] == created[name], name


async def test_the_effective_policy_of_an_unknown_tenant_is_404(api_client, admin_key) -> None:
    unknown = uuid.uuid4()
    refused = problem(
        await api_client.get(f"{RETENTION}/tenant/{unknown}", headers=key_headers(admin_key)),
        404,
    )
    assert str(unknown) in refused["detail"]


# -- Who may do what. --------------------------------------------------------------------


async def test_a_tenants_admin_key_manages_its_own_policy_only(
    api_client, api_settings, admin_key, db
) -> None:
    a, b = await add_tenant(api_settings), await add_tenant(api_settings)
    a_admin = key_headers(await add_key(api_settings, a, "admin"))
    b_policy = await create(api_client, key_headers(admin_key), tenant_id=str(b))
    b_before = db.execute(
        "SELECT * FROM log_retention_policies WHERE tenant_id = %s", (b,)
    ).fetchall()

    # Its own: without tenant_id, or naming itself.
    mine = await create(api_client, a_admin)
    assert mine["tenant_id"] == str(a)
    put = await api_client.put(
        f"{RETENTION}/{mine['id']}", json=policy_body(tenant_id=str(a)), headers=a_admin
    )
    assert put.status_code == 200, put.text
    listed = (await api_client.get(RETENTION, headers=a_admin)).json()["policies"]
    assert [p["id"] for p in listed] == [mine["id"]]

    # B's: naming B is 403, B's policy id is 404 (as an unknown id), and nothing of B's
    # appears in any answer.
    attempts = [
        ("POST", RETENTION, policy_body(tenant_id=str(b)), 403),
        ("GET", f"{RETENTION}/tenant/{b}", None, 403),
        ("PUT", f"{RETENTION}/{b_policy['id']}", policy_body(), 404),
        ("PUT", f"{RETENTION}/{mine['id']}", policy_body(tenant_id=str(b)), 403),
        ("DELETE", f"{RETENTION}/{b_policy['id']}", None, 404),
    ]
    for method, path, body, status in attempts:
        response = await api_client.request(method, path, json=body, headers=a_admin)
        problem(response, status)
        assert "cold/acme" not in response.text and b_policy["created_at"] not in response.text
    assert (
        db.execute("SELECT * FROM log_retention_policies WHERE tenant_id = %s", (b,)).fetchall()
        == b_before
    )


async def test_the_admin_key_acting_for_a_tenant_manages_that_tenants_policy(
    api_client, api_settings, admin_key
) -> None:
    tenant, other = await add_tenant(api_settings), await add_tenant(api_settings)
    acting = key_headers(admin_key, tenant)
    created = await create(api_client, acting)
    assert created["tenant_id"] == str(tenant)
    problem(await api_client.get(f"{RETENTION}/tenant/{other}", headers=acting), 403)


async def test_the_admin_key_needs_no_x_tenant_id_on_retention_routes(
    api_client, api_settings, admin_key
) -> None:
    """The app guard asks an admin key of `system` to name a tenant on tenant-data routes
    (400); retention routes are operator routes, like /api/v1/admin."""
    admin = key_headers(admin_key)
    problem(await api_client.get("/api/v1/logs", headers=admin), 400)
    tenant = await add_tenant(api_settings)
    created = await create(api_client, admin, tenant_id=str(tenant))
    for method, path in [
        ("GET", RETENTION),
        ("GET", f"{RETENTION}/tenant/{tenant}"),
        ("PUT", f"{RETENTION}/{created['id']}"),
        ("GET", f"{RETENTION}/status"),
        ("DELETE", f"{RETENTION}/{created['id']}"),
    ]:
        body = policy_body() if method == "PUT" else None
        response = await api_client.request(method, path, json=body, headers=admin)
        assert response.status_code in (200, 204), (method, path, response.text)
    # It acts for no tenant of its own, so a policy must name one.
    refused = problem(await api_client.post(RETENTION, json=policy_body(), headers=admin), 422)
    assert [e["field"] for e in refused["errors"]] == ["tenant_id"]


async def test_retention_routes_need_the_admin_scope(api_client, api_settings) -> None:
    tenant = await add_tenant(api_settings)
    not_admin = key_headers(await add_key(api_settings, tenant, "ingest", "query", "alerts"))
    routes = [e for e in endpoints(api_client.app) if e.template.startswith(RETENTION)]
    assert len(routes) == 6
    for endpoint in routes:
        url = endpoint.url(tenant_id=str(tenant))
        refused = problem(
            await api_client.request(endpoint.method, url, json=policy_body(), headers=not_admin),
            403,
        )
        assert "'admin' scope" in refused["detail"]
        problem(await api_client.request(endpoint.method, url, json=policy_body()), 401)


async def test_a_trusted_x_tenant_id_alone_manages_no_policy(client, db) -> None:
    """AUTH_MODE=trusted_header grants ingest, query and alerts, never admin."""
    response = await client.post(RETENTION, json=policy_body(), headers=tenant_headers())
    assert "admin key" in problem(response, 401)["detail"]
    assert stored(db) == []


# -- Validation: 422 naming the field, nothing stored. -----------------------------------


@pytest.mark.parametrize(
    "path", ["../x", "/etc", "a/../b", "a//b", ".", "..", "a/", "a/./b", "x\n", "a\\b", "é"]
)
async def test_archive_path_traversal_is_422_naming_it_and_nothing_is_stored(
    api_client, api_settings, db, path
) -> None:
    tenant = await add_tenant(api_settings)
    own = key_headers(await add_key(api_settings, tenant, "admin"))
    refused = problem(
        await api_client.post(RETENTION, json=policy_body(archive_path=path), headers=own), 422
    )
    assert [e["field"] for e in refused["errors"]] == ["archive_path"]
    assert stored(db) == []
    created = await create(api_client, own, archive_path="kept")
    before = stored(db)
    put = await api_client.put(
        f"{RETENTION}/{created['id']}", json=policy_body(archive_path=path), headers=own
    )
    assert [e["field"] for e in problem(put, 422)["errors"]] == ["archive_path"]
    assert stored(db) == before
    assert [a for a, *_ in audited(db)] == ["retention.create"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"archive_enabled": True, "archive_path": None}, "archive_path"),
        ({"archive_path": ""}, "archive_path"),
        ({"archive_path": "a" * 201}, "archive_path"),
        ({"retention_days": 0}, "retention_days"),
        ({"retention_days": 3651}, "retention_days"),
        ({"retention_days": "thirty"}, "retention_days"),
        ({"retention_days": None}, "retention_days"),
        ({"max_size_gb": 0}, "max_size_gb"),
        ({"max_size_gb": -1}, "max_size_gb"),
        ({"max_size_gb": 0.0001}, "max_size_gb"),
        ({"archive_enabled": "yes"}, "archive_enabled"),
        ({"tenant_id": "acme"}, "tenant_id"),
        ({"retention": 30}, "retention"),
    ],
)
async def test_an_invalid_policy_is_422_naming_the_field_and_nothing_is_stored(
    api_client, api_settings, db, changes, field
) -> None:
    tenant = await add_tenant(api_settings)
    own = key_headers(await add_key(api_settings, tenant, "admin"))
    refused = problem(
        await api_client.post(RETENTION, json=policy_body(**changes), headers=own), 422
    )
    assert [e["field"] for e in refused["errors"]] == [field]
    assert field in refused["detail"]
    assert stored(db) == []


async def test_the_bounds_of_retention_days_are_accepted(api_client, api_settings) -> None:
    admin_of = [
        (t, key_headers(await add_key(api_settings, t, "admin")))
        for t in (await add_tenant(api_settings), await add_tenant(api_settings))
    ]
    for (_, headers), days in zip(admin_of, (1, 3650), strict=True):
        assert (await create(api_client, headers, retention_days=days))["retention_days"] == days


async def test_a_missing_retention_days_is_422(api_client, api_settings, db) -> None:
    tenant = await add_tenant(api_settings)
    own = key_headers(await add_key(api_settings, tenant, "admin"))
    refused = problem(await api_client.post(RETENTION, json={}, headers=own), 422)
    assert [e["field"] for e in refused["errors"]] == ["retention_days"]
    assert stored(db) == []


async def test_a_policy_for_an_unknown_tenant_is_404_and_nothing_is_stored(
    api_client, admin_key, db
) -> None:
    unknown = uuid.uuid4()
    response = await api_client.post(
        RETENTION, json=policy_body(tenant_id=str(unknown)), headers=key_headers(admin_key)
    )
    assert str(unknown) in problem(response, 404)["detail"]
    assert stored(db) == [] and audited(db) == []


async def test_an_unknown_policy_is_404_on_put_and_delete(api_client, admin_key) -> None:
    unknown = uuid.uuid4()
    admin = key_headers(admin_key)
    for method in ("PUT", "DELETE"):
        response = await api_client.request(
            method, f"{RETENTION}/{unknown}", json=policy_body(), headers=admin
        )
        assert problem(response, 404)["detail"] == f"no retention policy {unknown}"


async def test_a_policy_stays_its_tenants(api_client, api_settings, admin_key, db) -> None:
    tenant, other = await add_tenant(api_settings), await add_tenant(api_settings)
    admin = key_headers(admin_key)
    created = await create(api_client, admin, tenant_id=str(tenant))
    before = stored(db)
    moved = await api_client.put(
        f"{RETENTION}/{created['id']}", json=policy_body(tenant_id=str(other)), headers=admin
    )
    assert [e["field"] for e in problem(moved, 422)["errors"]] == ["tenant_id"]
    assert stored(db) == before


# -- The janitor's runs. -----------------------------------------------------------------


def record_run(db: psycopg.Connection, started_at: datetime, **values: Any) -> int:
    """A run as the janitor records it."""
    columns = {"started_at": started_at, **values}
    for name in ("actions", "errors"):
        if name in columns:
            columns[name] = Jsonb(columns[name])
    names = ", ".join(columns)
    marks = ", ".join(["%s"] * len(columns))
    row = db.execute(
        f"INSERT INTO retention_runs ({names}) VALUES ({marks}) RETURNING id",
        list(columns.values()),
    ).fetchone()
    assert row is not None
    run_id: int = row[0]
    return run_id


async def test_the_status_shows_the_last_run_the_next_and_the_recent_ones(
    api_client, admin_key, api_settings, db
) -> None:
    start = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)
    older = [record_run(db, start + timedelta(minutes=5 * i), finished_at=start) for i in range(3)]
    action = {"tenant_id": str(uuid.uuid4()), "day": "2026-01-07", "reason": "retention"}
    last_start = start + timedelta(minutes=15)
    last = record_run(
        db,
        last_start,
        finished_at=last_start + timedelta(seconds=4),
        dropped_partitions=1,
        deleted_rows=1200,
        deleted_bytes=354_000,
        archived_rows=1200,
        archived_bytes=110_000,
        archived_files=1,
        actions=[action],
        errors=[{"tenant_id": action["tenant_id"], "error": "disk full"}],
    )
    admin = key_headers(admin_key)
    status = (await api_client.get(f"{RETENTION}/status", headers=admin)).json()
    interval = api_settings.retention_interval_seconds
    assert status["interval_seconds"] == interval
    assert status["last_run"] == {
        "id": last,
        "started_at": "2026-01-15T10:15:00Z",
        "finished_at": "2026-01-15T10:15:04Z",
        "dropped_partitions": 1,
        "deleted_rows": 1200,
        "deleted_bytes": 354_000,
        "archived_rows": 1200,
        "archived_bytes": 110_000,
        "archived_files": 1,
        "actions": [action],
        "errors": [{"tenant_id": action["tenant_id"], "error": "disk full"}],
    }
    assert as_time(status["next_run_at"]) == last_start + timedelta(seconds=interval)
    assert [r["id"] for r in status["runs"]] == [last, *reversed(older)]
    assert status["has_more"] is False

    # Paged newest first: `before_id` is the last id seen; the last run stays the last.
    page = (await api_client.get(f"{RETENTION}/status", params={"limit": 2}, headers=admin)).json()
    assert [r["id"] for r in page["runs"]] == [last, older[2]] and page["has_more"] is True
    params = {"limit": 2, "before_id": older[2]}
    rest = (await api_client.get(f"{RETENTION}/status", params=params, headers=admin)).json()
    assert [r["id"] for r in rest["runs"]] == [older[1], older[0]]
    assert rest["has_more"] is False and rest["last_run"]["id"] == last


async def test_a_run_in_progress_has_no_finish(api_client, admin_key, db) -> None:
    started = datetime.now(UTC).replace(microsecond=0)
    record_run(db, started)
    status = (await api_client.get(f"{RETENTION}/status", headers=key_headers(admin_key))).json()
    assert status["last_run"]["finished_at"] is None
    assert status["last_run"]["actions"] == [] and status["last_run"]["deleted_rows"] == 0


async def test_before_any_run_the_status_is_empty(api_client, admin_key) -> None:
    response = await api_client.get(f"{RETENTION}/status", headers=key_headers(admin_key))
    assert response.status_code == 200, response.text
    status = response.json()
    assert status["last_run"] is None and status["next_run_at"] is None
    assert status["runs"] == [] and status["has_more"] is False


async def test_the_status_is_for_the_admin_key_only(
    api_client, api_settings, admin_key, client, db
) -> None:
    record_run(db, datetime.now(UTC))
    tenant = await add_tenant(api_settings)
    path = f"{RETENTION}/status"
    for headers in (
        key_headers(await add_key(api_settings, tenant, "admin")),
        key_headers(admin_key, tenant),  # acting for a tenant, it sees what the tenant sees
    ):
        assert "admin key" in problem(await api_client.get(path, headers=headers), 403)["detail"]
    not_admin = key_headers(await add_key(api_settings, tenant, "query"))
    problem(await api_client.get(path, headers=not_admin), 403)
    problem(await api_client.get(path), 401)
    problem(await client.get(path, headers=tenant_headers()), 401)


# -- Outages. ----------------------------------------------------------------------------


async def test_an_unreachable_database_is_a_503(settings: Settings) -> None:
    secret = "env-admin-key-" + uuid.uuid4().hex
    config = replace(settings, auth_mode="api_key", admin_api_key=secret)
    unreachable = make_pool(
        replace(settings, postgres_port=1), name="unreachable", min_size=0, timeout=0.5
    )
    await unreachable.open(wait=False)
    async with AsyncTestClient(app=create_app(config)) as client:
        gateway = client.app.state["gateway"]
        client.app.state["gateway"] = replace(gateway, pool=unreachable)
        try:
            for method, path in [("GET", RETENTION), ("GET", f"{RETENTION}/status")]:
                response = await client.request(method, path, headers=key_headers(secret))
                assert response.headers["retry-after"] == "2"
                assert "database is unavailable" in problem(response, 503)["detail"]
        finally:
            client.app.state["gateway"] = gateway
            await unreachable.close()
