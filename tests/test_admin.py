"""The admin API: tenants and their limits, API keys (shown once, stored hashed), and the
audit trail of who changed what."""

from __future__ import annotations

import hashlib
import uuid

from tests.keyring import add_key, add_tenant, key_headers


async def test_tenant_is_created_listed_and_read(api_client, admin_key) -> None:
    headers = key_headers(admin_key)
    tenant_id = uuid.uuid4()
    created = await api_client.post(
        "/api/v1/admin/tenants", json={"name": "acme", "id": str(tenant_id)}, headers=headers
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["id"], body["name"]) == (str(tenant_id), "acme")
    assert all(value is None for value in body["limits"].values())
    listed = await api_client.get("/api/v1/admin/tenants", headers=headers)
    assert [t["name"] for t in listed.json()] == ["system", "acme"]
    one = await api_client.get(f"/api/v1/admin/tenants/{tenant_id}", headers=headers)
    assert one.json() == body


async def test_tenant_name_or_id_taken_is_409(api_client, admin_key) -> None:
    headers = key_headers(admin_key)
    first = await api_client.post("/api/v1/admin/tenants", json={"name": "acme"}, headers=headers)
    again = await api_client.post("/api/v1/admin/tenants", json={"name": "acme"}, headers=headers)
    same_id = await api_client.post(
        "/api/v1/admin/tenants",
        json={"name": "other", "id": first.json()["id"]},
        headers=headers,
    )
    assert (again.status_code, same_id.status_code) == (409, 409)
    assert again.headers["content-type"] == "application/problem+json"


async def test_taken_tenant_name_or_id_names_the_tenant_in_the_way(api_client, admin_key) -> None:
    headers = key_headers(admin_key)
    first = await api_client.post("/api/v1/admin/tenants", json={"name": "acme"}, headers=headers)
    acme = first.json()["id"]
    again = await api_client.post("/api/v1/admin/tenants", json={"name": "acme"}, headers=headers)
    same_id = await api_client.post(
        "/api/v1/admin/tenants", json={"name": "other", "id": acme}, headers=headers
    )
    # The existing tenant, not the id generated for the refused one (which exists nowhere).
    assert again.json()["detail"] == f"a tenant named 'acme' exists (id {acme})"
    assert same_id.json()["detail"] == f"the id {acme} belongs to the tenant 'acme'"


INVALID_TENANTS = [
    {},
    {"name": ""},
    {"name": "x" * 129},
    {"name": "nul\u0000byte"},
    {"name": "ok", "color": "blue"},
    {"name": "ok", "limits": {"max_body_bytes": 0}},
    {"name": "ok", "limits": {"ingest_logs_per_second": -1}},
    {"name": "ok", "limits": {"ingest_logs_per_second": 2**40}},
    {"name": "ok", "limits": {"unknown_limit": 1}},
]


async def test_invalid_tenant_is_refused_with_a_problem(api_client, admin_key, db) -> None:
    # As ingest answers a bad entry: 422 naming the field (issue 16: one error table).
    for body in INVALID_TENANTS:
        response = await api_client.post(
            "/api/v1/admin/tenants", json=body, headers=key_headers(admin_key)
        )
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"][0]["field"], response.text
    assert db.execute("SELECT count(*) FROM tenants").fetchone() == (1,)


async def test_unknown_tenant_is_404(api_client, admin_key) -> None:
    headers = key_headers(admin_key)
    missing = uuid.uuid4()
    assert (
        await api_client.get(f"/api/v1/admin/tenants/{missing}", headers=headers)
    ).status_code == 404
    response = await api_client.put(
        f"/api/v1/admin/tenants/{missing}/limits", json={}, headers=headers
    )
    assert response.status_code == 404


async def test_limits_are_replaced_and_null_means_default(api_client, api_settings, admin_key):
    tenant = await add_tenant(api_settings)
    headers = key_headers(admin_key)
    url = f"/api/v1/admin/tenants/{tenant}/limits"
    first = await api_client.put(
        url, json={"ingest_logs_per_second": 10, "max_batch_entries": 50}, headers=headers
    )
    assert first.status_code == 200, first.text
    assert first.json()["limits"]["ingest_logs_per_second"] == 10
    second = await api_client.put(url, json={"max_metadata_keys": 5}, headers=headers)
    limits = second.json()["limits"]
    assert (limits["ingest_logs_per_second"], limits["max_metadata_keys"]) == (None, 5)


async def test_a_size_limit_above_the_deployments_is_422(api_client, api_settings, admin_key):
    tenant = await add_tenant(api_settings)
    response = await api_client.put(
        f"/api/v1/admin/tenants/{tenant}/limits",
        json={"max_body_bytes": api_settings.max_body_bytes + 1},
        headers=key_headers(admin_key),
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "limits.max_body_bytes"


async def test_key_is_shown_once_and_only_its_digest_is_stored(
    api_client, api_settings, admin_key, db
) -> None:
    tenant = await add_tenant(api_settings)
    headers = key_headers(admin_key)
    created = await api_client.post(
        "/api/v1/admin/keys",
        json={"tenant_id": str(tenant), "scopes": ["query", "ingest", "query"], "name": "ci"},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    assert created.headers["cache-control"] == "no-store"
    body = created.json()
    key = body["key"]
    assert key.startswith("mlk_") and len(key) >= 40
    assert (body["prefix"], body["scopes"], body["name"]) == (key[:12], ["ingest", "query"], "ci")
    listed = await api_client.get("/api/v1/admin/keys", headers=headers)
    assert key not in listed.text
    assert body["id"] in {k["id"] for k in listed.json()}
    (row,) = db.execute(
        "SELECT key_hash FROM api_keys WHERE id = %s", (uuid.UUID(body["id"]),)
    ).fetchall()
    assert bytes(row[0]) == hashlib.sha256(key.encode()).digest()
    dump = db.execute("SELECT api_keys::text FROM api_keys").fetchall()
    assert all(key not in r[0] for r in dump)
    works = await api_client.get("/api/v1/admin/keys", headers=key_headers(key))
    assert works.status_code == 403  # a working key, without the admin scope


INVALID_KEY_REQUESTS = [
    {"scopes": ["ingest"]},
    {"tenant_id": "not-a-uuid", "scopes": ["ingest"]},
    {"tenant_id": str(uuid.UUID(int=0)), "scopes": []},
    {"tenant_id": str(uuid.UUID(int=0)), "scopes": ["root"]},
    {"tenant_id": str(uuid.UUID(int=0)), "scopes": ["ingest"], "expires": "never"},
]


async def test_invalid_key_request_is_422_naming_the_field(api_client, admin_key, db) -> None:
    # As ingest answers a bad entry: 422 naming the field (issue 16: one error table).
    for body in INVALID_KEY_REQUESTS:
        response = await api_client.post(
            "/api/v1/admin/keys", json=body, headers=key_headers(admin_key)
        )
        assert response.status_code == 422, (body, response.text)
        assert response.json()["errors"][0]["field"], response.text
    assert db.execute("SELECT count(*) FROM api_keys").fetchone() == (1,)


async def test_key_for_an_unknown_tenant_is_404(api_client, admin_key) -> None:
    response = await api_client.post(
        "/api/v1/admin/keys",
        json={"tenant_id": str(uuid.uuid4()), "scopes": ["ingest"]},
        headers=key_headers(admin_key),
    )
    assert response.status_code == 404


async def test_keys_are_listed_per_tenant(api_client, api_settings, admin_key) -> None:
    one, two = await add_tenant(api_settings), await add_tenant(api_settings)
    await add_key(api_settings, one, "ingest")
    await add_key(api_settings, two, "query")
    await add_key(api_settings, two, "ingest")
    headers = key_headers(admin_key)
    listed = await api_client.get(
        "/api/v1/admin/keys", params={"tenant_id": str(two)}, headers=headers
    )
    assert [k["tenant_id"] for k in listed.json()] == [str(two), str(two)]
    everyone = await api_client.get("/api/v1/admin/keys", headers=headers)
    assert len(everyone.json()) == 4  # and the bootstrap key
    page = await api_client.get(
        "/api/v1/admin/keys", params={"limit": 1, "offset": 1}, headers=headers
    )
    assert page.json() == everyone.json()[1:2]


async def test_revoking_is_idempotent_and_unknown_key_is_404(
    api_client, api_settings, admin_key
) -> None:
    tenant = await add_tenant(api_settings)
    await add_key(api_settings, tenant, "ingest")
    headers = key_headers(admin_key)
    (key,) = (
        await api_client.get(
            "/api/v1/admin/keys", params={"tenant_id": str(tenant)}, headers=headers
        )
    ).json()
    first = await api_client.post(f"/api/v1/admin/keys/{key['id']}/revoke", headers=headers)
    again = await api_client.post(f"/api/v1/admin/keys/{key['id']}/revoke", headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json()["revoked_at"] == again.json()["revoked_at"] is not None
    missing = await api_client.post(f"/api/v1/admin/keys/{uuid.uuid4()}/revoke", headers=headers)
    assert missing.status_code == 404


async def test_audit_records_who_did_what_and_when(api_client, admin_key, db) -> None:
    headers = key_headers(admin_key)
    (admin_id,) = db.execute("SELECT id FROM api_keys WHERE bootstrap").fetchone()
    tenant = (
        await api_client.post("/api/v1/admin/tenants", json={"name": "acme"}, headers=headers)
    ).json()["id"]
    await api_client.put(
        f"/api/v1/admin/tenants/{tenant}/limits", json={"max_batch_entries": 10}, headers=headers
    )
    key = (
        await api_client.post(
            "/api/v1/admin/keys", json={"tenant_id": tenant, "scopes": ["ingest"]}, headers=headers
        )
    ).json()
    await api_client.post(f"/api/v1/admin/keys/{key['id']}/revoke", headers=headers)
    audit = await api_client.get(
        "/api/v1/admin/audit", params={"tenant_id": tenant}, headers=headers
    )
    events = audit.json()
    assert [e["action"] for e in events] == [
        "key.revoke",
        "key.create",
        "tenant.limits",
        "tenant.create",
    ]
    assert {e["actor_key_id"] for e in events} == {str(admin_id)}
    assert {e["actor"] for e in events} == {"api_key"}
    assert all(e["tenant_id"] == tenant and e["at"] for e in events)
    assert events[1]["target_id"] == key["id"] and key["key"] not in audit.text
    older = await api_client.get(
        "/api/v1/admin/audit",
        params={"tenant_id": tenant, "before_id": events[1]["id"], "limit": 1},
        headers=headers,
    )
    assert [e["action"] for e in older.json()] == ["tenant.limits"]


async def test_audit_and_lists_refuse_out_of_range_paging(api_client, admin_key) -> None:
    headers = key_headers(admin_key)
    for url, params in [
        ("/api/v1/admin/audit", {"limit": 0}),
        ("/api/v1/admin/audit", {"limit": 10**9}),
        ("/api/v1/admin/audit", {"before_id": -5}),
        ("/api/v1/admin/audit", {"before_id": 10**30}),
        ("/api/v1/admin/keys", {"offset": -1}),
        ("/api/v1/admin/tenants", {"limit": "many"}),
    ]:
        response = await api_client.get(url, params=params, headers=headers)
        assert response.status_code == 400, (url, params, response.text)
