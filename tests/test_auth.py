"""Authentication and scopes: API keys, the trusted-header mode, admin keys acting for a
tenant, revocation within the cache delay, and the bootstrap admin key."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import replace

import psycopg
import pytest
from litestar.testing import AsyncTestClient
from psycopg import AsyncConnection

from services.gateway.admin.cli import main as keys_cli
from services.gateway.admin.tenancy import SYSTEM_TENANT, ensure_bootstrap_key, first_admin_key
from services.gateway.app import create_app
from shared.settings import Settings
from tests.keyring import add_key, add_tenant, key_headers
from tests.routes import endpoints, error_detail, needs_caller

ENTRY = {"service_name": "auth-test", "level": "INFO", "message": "hello"}


def stored(db: psycopg.Connection) -> list[tuple[uuid.UUID, str]]:
    return [(r[0], r[1]) for r in db.execute("SELECT tenant_id, message FROM log_entries")]


def test_api_key_mode_is_the_default() -> None:
    assert Settings.from_env({}).auth_mode == "api_key"


async def test_ingest_with_bearer_key_is_stored_under_the_keys_tenant(
    api_client, api_settings, writer, db
) -> None:
    tenant = await add_tenant(api_settings)
    key = await add_key(api_settings, tenant, "ingest")
    response = await api_client.post("/api/v1/logs", json=ENTRY, headers=key_headers(key))
    assert response.status_code == 202, response.text
    await writer.drain()
    assert stored(db) == [(tenant, "hello")]


async def test_x_api_key_header_works_like_bearer(api_client, api_settings, writer, db) -> None:
    tenant = await add_tenant(api_settings)
    key = await add_key(api_settings, tenant, "ingest")
    response = await api_client.post("/api/v1/logs", json=ENTRY, headers={"X-API-Key": key})
    assert response.status_code == 202, response.text
    await writer.drain()
    assert stored(db) == [(tenant, "hello")]


MISSING_OR_UNKNOWN_KEYS = {
    "none": {},
    "unknown-bearer": {"Authorization": "Bearer mlk_notakeyatall"},
    "unknown-x-api-key": {"X-API-Key": "mlk_notakeyatall"},
    "basic": {"Authorization": "Basic dXNlcjpwYXNz"},
    "empty": {"Authorization": "Bearer "},
    "huge": {"X-API-Key": "k" * 5000},
    # trusted_header's credential means nothing in api_key mode
    "tenant-only": {"X-Tenant-ID": str(uuid.uuid4())},
}


async def test_missing_or_unknown_key_is_401_with_a_challenge(api_client, writer, db) -> None:
    for case, headers in MISSING_OR_UNKNOWN_KEYS.items():
        response = await api_client.post("/api/v1/logs", json=ENTRY, headers=headers)
        assert response.status_code == 401, case
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["status"] == 401
    await writer.drain()
    assert stored(db) == []


async def test_two_different_keys_in_one_request_is_400(api_client, api_settings) -> None:
    tenant = await add_tenant(api_settings)
    one = await add_key(api_settings, tenant, "ingest")
    other = await add_key(api_settings, tenant, "ingest")
    headers = {"Authorization": f"Bearer {one}", "X-API-Key": other}
    response = await api_client.post("/api/v1/logs", json=ENTRY, headers=headers)
    assert response.status_code == 400


async def test_every_route_needing_a_caller_refuses_a_request_without_key(api_client) -> None:
    checked = 0
    for endpoint in endpoints(api_client.app):
        if not needs_caller(endpoint):
            continue
        response = await api_client.request(endpoint.method, endpoint.url(), json={})
        assert response.status_code == 401, (endpoint, response.text)
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize(
    ("granted", "refused"),
    [(("ingest",), ("query", "admin")), (("query",), ("ingest", "admin"))],
    ids=["ingest-only", "query-only"],
)
async def test_a_key_is_refused_every_route_outside_its_scopes(
    api_client, api_settings, granted, refused
) -> None:
    tenant = await add_tenant(api_settings)
    key = await add_key(api_settings, tenant, *granted)
    checked: set[str] = set()
    for endpoint in endpoints(api_client.app):
        if endpoint.scope not in refused:
            continue
        response = await api_client.request(
            endpoint.method, endpoint.url(), json={}, headers=key_headers(key)
        )
        assert response.status_code == 403, (endpoint, response.text)
        assert "scope" in error_detail(response)
        checked.add(endpoint.scope)
    assert checked == set(refused)


async def test_non_admin_key_naming_another_tenant_is_403(
    api_client, api_settings, writer, db
) -> None:
    mine, theirs = await add_tenant(api_settings), await add_tenant(api_settings)
    key = await add_key(api_settings, mine, "ingest", "query")
    response = await api_client.post("/api/v1/logs", json=ENTRY, headers=key_headers(key, theirs))
    assert response.status_code == 403
    same = await api_client.post("/api/v1/logs", json=ENTRY, headers=key_headers(key, mine))
    assert same.status_code == 202
    await writer.drain()
    assert stored(db) == [(mine, "hello")]


async def test_admin_key_acts_for_the_tenant_named_in_x_tenant_id(
    api_client, api_settings, admin_key, writer, db
) -> None:
    tenant = await add_tenant(api_settings)
    response = await api_client.post(
        "/api/v1/logs", json=ENTRY, headers=key_headers(admin_key, tenant)
    )
    assert response.status_code == 202, response.text
    await writer.drain()
    assert stored(db) == [(tenant, "hello")]


async def test_admin_key_naming_an_unknown_tenant_is_404(api_client, admin_key) -> None:
    response = await api_client.post(
        "/api/v1/logs", json=ENTRY, headers=key_headers(admin_key, uuid.uuid4())
    )
    assert response.status_code == 404


async def test_revoked_key_is_refused_at_once_without_cache(
    api_client, api_settings, admin_key
) -> None:
    tenant = await add_tenant(api_settings)
    key = await add_key(api_settings, tenant, "ingest")
    assert (await api_client.post("/api/v1/logs", json=ENTRY, headers=key_headers(key))).is_success
    listed = await api_client.get(
        "/api/v1/admin/keys", params={"tenant_id": str(tenant)}, headers=key_headers(admin_key)
    )
    (record,) = listed.json()
    revoked = await api_client.post(
        f"/api/v1/admin/keys/{record['id']}/revoke", headers=key_headers(admin_key)
    )
    assert revoked.status_code == 200
    response = await api_client.post("/api/v1/logs", json=ENTRY, headers=key_headers(key))
    assert response.status_code == 401


async def test_revoked_key_stops_working_in_another_gateway_within_the_cache_delay(
    api_client, api_settings, admin_key
) -> None:
    ttl = 0.5
    other_gateway = create_app(replace(api_settings, auth_cache_seconds=ttl))
    tenant = await add_tenant(api_settings)
    key = await add_key(api_settings, tenant, "ingest")
    async with AsyncTestClient(app=other_gateway) as other:
        warm = await other.post("/api/v1/logs", json=ENTRY, headers=key_headers(key))
        assert warm.status_code == 202  # now cached there
        listed = await api_client.get("/api/v1/admin/keys", headers=key_headers(admin_key))
        key_id = next(k["id"] for k in listed.json() if k["tenant_id"] == str(tenant))
        await api_client.post(f"/api/v1/admin/keys/{key_id}/revoke", headers=key_headers(admin_key))
        revoked_at = time.monotonic()
        deadline = revoked_at + ttl + 5
        while True:
            response = await other.post("/api/v1/logs", json=ENTRY, headers=key_headers(key))
            if response.status_code == 401 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert response.status_code == 401


async def test_admin_api_key_from_the_environment_is_an_operator_key(
    api_settings, writer, db
) -> None:
    secret = "env-admin-key-" + uuid.uuid4().hex
    app = create_app(replace(api_settings, admin_api_key=secret))
    async with AsyncTestClient(app=app) as client:
        tenants = await client.get("/api/v1/admin/tenants", headers=key_headers(secret))
        assert tenants.status_code == 200
        assert str(SYSTEM_TENANT) in tenants.text
        wrong = await client.get("/api/v1/admin/tenants", headers=key_headers(secret + "x"))
        assert wrong.status_code == 401
        created = await client.post(
            "/api/v1/admin/tenants", json={"name": "from-env"}, headers=key_headers(secret)
        )
        audit = await client.get("/api/v1/admin/audit", headers=key_headers(secret))
    assert created.status_code == 201
    assert audit.json()[0]["actor"] == "admin_api_key"


async def test_bootstrap_admin_key_is_made_and_shown_exactly_once(api_settings) -> None:
    async def make() -> str | None:
        async with await AsyncConnection.connect(api_settings.postgres_conninfo()) as conn:
            return await ensure_bootstrap_key(conn)

    made = await asyncio.gather(*(make() for _ in range(4)))
    assert len([k for k in made if k is not None]) == 1
    assert await first_admin_key(api_settings) is None


async def test_no_bootstrap_key_when_admin_api_key_is_set_or_headers_are_trusted(
    api_settings,
) -> None:
    assert await first_admin_key(replace(api_settings, admin_api_key="x" * 30)) is None
    assert await first_admin_key(replace(api_settings, auth_mode="trusted_header")) is None


async def test_trusted_header_mode_takes_the_tenant_from_x_tenant_id(client, writer, db) -> None:
    tenant = uuid.uuid4()
    headers = {"X-Tenant-ID": str(tenant)}
    assert (await client.post("/api/v1/logs", json=ENTRY, headers=headers)).status_code == 202
    assert (await client.post("/api/v1/logs", json=ENTRY)).status_code == 401
    await writer.drain()
    assert stored(db) == [(tenant, "hello")]


async def test_trusted_header_alone_is_refused_every_admin_route(client) -> None:
    headers = {"X-Tenant-ID": str(uuid.uuid4())}
    checked = 0
    for endpoint in endpoints(client.app):
        if endpoint.scope != "admin":
            continue
        response = await client.request(endpoint.method, endpoint.url(), json={}, headers=headers)
        assert response.status_code == 401, (endpoint, response.text)
        assert "admin key" in response.json()["detail"]
        checked += 1
    assert checked >= 8
    everyone = await client.get(
        "/api/v1/logs/storage", params={"all_tenants": "true"}, headers=headers
    )
    assert everyone.status_code == 401


async def test_trusted_header_mode_takes_the_admin_key_on_admin_routes(settings, writer, db):
    secret = "env-admin-key-" + uuid.uuid4().hex
    stored_admin = await add_key(settings, SYSTEM_TENANT, "admin")
    query_key = await add_key(settings, await add_tenant(settings), "query")
    tenant = uuid.uuid4()
    async with AsyncTestClient(app=create_app(replace(settings, admin_api_key=secret))) as client:
        for key in (secret, stored_admin):
            listed = await client.get("/api/v1/admin/tenants", headers=key_headers(key))
            assert listed.status_code == 200, listed.text
            created = await client.post(
                "/api/v1/admin/tenants", json={"name": key[-8:]}, headers={"X-API-Key": key}
            )
            assert created.status_code == 201, created.text
            everyone = await client.get(
                "/api/v1/logs/storage", params={"all_tenants": "1"}, headers=key_headers(key)
            )
            assert everyone.status_code == 200, everyone.text
        not_admin = await client.get("/api/v1/admin/tenants", headers=key_headers(query_key))
        assert not_admin.status_code == 403
        # Everything else still takes X-Tenant-ID alone.
        headers = {"X-Tenant-ID": str(tenant)}
        assert (await client.post("/api/v1/logs", json=ENTRY, headers=headers)).status_code == 202
        assert (await client.get("/api/v1/logs", headers=headers)).status_code == 200
        own = await client.get("/api/v1/logs/storage", headers=headers)
        assert own.json()["tenant_id"] == str(tenant)
    await writer.drain()
    assert stored(db) == [(tenant, "hello")]


async def test_admin_key_naming_no_tenant_on_a_tenant_data_route_is_400(
    api_client, api_settings, admin_key
) -> None:
    checked = set()
    for endpoint in endpoints(api_client.app):
        if not needs_caller(endpoint) or endpoint.scope == "admin":
            continue
        response = await api_client.request(
            endpoint.method, endpoint.url(), json={}, headers=key_headers(admin_key)
        )
        assert response.status_code == 400, (endpoint, response.text)
        assert "X-Tenant-ID" in error_detail(response)
        checked.add(endpoint.template)
    assert {"/api/v1/logs", "/api/v1/logs/query", "/api/v1/logs/stats"} <= checked
    assert "/api/v1/logs/stream" in checked
    tenant = await add_tenant(api_settings)
    named = await api_client.get("/api/v1/logs", headers=key_headers(admin_key, tenant))
    assert named.status_code == 200
    everyone = await api_client.get(
        "/api/v1/logs/storage", params={"all_tenants": "true"}, headers=key_headers(admin_key)
    )
    assert everyone.status_code == 200


def test_cli_creates_lists_and_revokes_keys(settings, monkeypatch, capsys) -> None:
    for name, value in (
        ("POSTGRES_HOST", settings.postgres_host),
        ("POSTGRES_PORT", str(settings.postgres_port)),
        ("POSTGRES_USER", settings.postgres_user),
        ("POSTGRES_PASSWORD", settings.postgres_password),
        ("POSTGRES_DB", settings.postgres_db),
    ):
        monkeypatch.setenv(name, value)
    keys_cli(["add-tenant", "--name", "acme"])
    tenant_id = uuid.UUID(capsys.readouterr().out.strip())
    keys_cli(["create", "--tenant", "acme", "--scopes", "ingest,query", "--name", "web"])
    key = capsys.readouterr().out.strip()
    assert key.startswith("mlk_")
    keys_cli(["list", "--tenant", str(tenant_id)])
    listing = capsys.readouterr().out
    assert key not in listing
    (record,) = json.loads(listing)
    assert (record["prefix"], record["name"], record["scopes"]) == (
        key[:12],
        "web",
        ["ingest", "query"],
    )
    keys_cli(["revoke", record["id"]])
    assert json.loads(capsys.readouterr().out)["revoked_at"] is not None
    with pytest.raises(SystemExit):
        keys_cli(["create", "--tenant", "nobody", "--scopes", "ingest"])
    with pytest.raises(SystemExit):
        keys_cli(["create", "--tenant", "acme", "--scopes", "ingest,root"])
