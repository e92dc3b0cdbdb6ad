"""Hostile input: SQL-injection strings, oversized and deeply nested bodies, invalid
UTF-8, NUL bytes, absurd paging, unknown fields and wrong content types each get a
clear 4xx (or are stored as the plain text they are), never a 5xx; nothing internal
reaches a client; the process stays healthy."""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from litestar import get
from litestar.testing import AsyncTestClient

from services.gateway.app import create_app
from services.gateway.auth import conventional_scope
from tests.keyring import add_key, add_tenant, key_headers

INJECTIONS = [
    "'; DROP TABLE log_entries; --",
    '" OR 1=1 --',
    "x' OR '1'='1",
    "1); SELECT pg_sleep(5); --",
    "$$; DELETE FROM tenants; $$",
    "%' OR tenant_id IS NOT NULL OR '",
    "\\'; TRUNCATE api_keys; --",
    "') UNION SELECT key_hash::text FROM api_keys --",
]
TEXT_FIELDS = [
    "service_name",
    "message",
    "trace_id",
    "span_id",
    "user_id",
    "request_id",
    "source",
    "host",
    "environment",
]
# What a client must never see: our code, our SQL, our driver.
INTERNALS = ("Traceback", 'File "', "psycopg", "syntax error", "SELECT ", "api_keys", "/work/")


@pytest.fixture
async def key(api_settings) -> str:
    tenant = await add_tenant(api_settings)
    return await add_key(api_settings, tenant, "ingest", "query", "alerts")


def rows(db: psycopg.Connection) -> int:
    (count,) = db.execute("SELECT count(*) FROM log_entries").fetchone()
    return int(count)


def assert_clean_refusal(response: Any, *statuses: int, sent: str = "") -> None:
    """A 4xx (one of `statuses` when given) as problem JSON saying nothing internal
    (beyond an echo of what was `sent`)."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    if statuses:
        assert response.status_code in statuses, (response.status_code, response.text[:300])
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert {"type", "title", "status", "detail"} <= problem.keys()
    leaks = [s for s in INTERNALS if s in response.text and s not in sent]
    assert not leaks, response.text[:300]


async def assert_healthy(client: AsyncTestClient) -> None:  # type: ignore[type-arg]
    assert (await client.get("/live")).status_code == 200
    assert (await client.get("/health")).json()["status"] == "ok"


async def test_injection_strings_in_every_field_are_stored_as_plain_text(
    api_client, key, writer, db
) -> None:
    entries = []
    for field in TEXT_FIELDS:
        for payload in INJECTIONS:
            entry = {"service_name": "svc", "level": "INFO", "message": "m", field: payload}
            entry["metadata"] = {payload: payload, "nested": {"k": [payload]}}
            entries.append(entry)
    response = await api_client.post(
        "/api/v1/logs/batch", json={"entries": entries}, headers=key_headers(key)
    )
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == len(entries)
    await writer.drain()
    stored = db.execute(
        "SELECT " + ", ".join(TEXT_FIELDS) + ", metadata FROM log_entries"
    ).fetchall()
    assert len(stored) == len(entries)
    for field_index, field in enumerate(TEXT_FIELDS):
        assert {r[field_index] for r in stored} >= set(INJECTIONS), field
    assert db.execute("SELECT count(*) FROM tenants").fetchone()[0] >= 2
    assert db.execute("SELECT count(*) FROM api_keys").fetchone()[0] >= 1
    await assert_healthy(api_client)


async def test_injection_strings_in_every_query_parameter_and_filter(api_client, key, db):
    """Every parameter of every GET operation and every string of every JSON body the
    OpenAPI document describes, set to each injection string."""
    document = (await api_client.get("/schema/openapi.json")).json()
    tried = 0
    for path, operations in document["paths"].items():
        if not path.startswith("/api/v1/logs") or path.endswith("/stream"):
            continue
        for method, operation in operations.items():
            names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
            body_names = _string_properties(operation, document)
            for payload in INJECTIONS:
                url = _fill_path(path, payload)
                for name in names:
                    response = await api_client.request(
                        method.upper(), url, params={name: payload}, headers=key_headers(key)
                    )
                    _assert_no_error(response, path, name, payload)
                    tried += 1
                for name in body_names:
                    response = await api_client.request(
                        method.upper(), url, json={name: payload}, headers=key_headers(key)
                    )
                    _assert_no_error(response, path, name, payload)
                    tried += 1
    assert tried >= 50
    assert db.execute("SELECT count(*) FROM api_keys").fetchone()[0] >= 1
    await assert_healthy(api_client)


def _fill_path(path: str, value: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda _: quote(value, safe=""), path)


def _string_properties(operation: dict[str, Any], document: dict[str, Any]) -> list[str]:
    schema = (
        operation.get("requestBody", {})
        .get("content", {})
        .get("application/json", {})
        .get("schema", {})
    )
    if "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    names = []
    for name, prop in schema.get("properties", {}).items():
        kinds = [prop.get("type")] + [
            p.get("type") for p in prop.get("oneOf", prop.get("anyOf", []))
        ]
        if "string" in kinds:
            names.append(name)
    return names


def _assert_no_error(response: Any, path: str, name: str, payload: str) -> None:
    assert response.status_code < 500, (path, name, response.text[:300])
    if response.status_code >= 400:
        assert_clean_refusal(response, sent=payload)


HUGE_OR_DEEP_METADATA = {
    "100k-keys": {f"k{i}": i for i in range(100_000)},
    "50-levels": json.loads('{"a":' * 50 + "1" + "}" * 50),
    "100kB-value": {"big": "x" * 100_000},
    "200k-list": {"list": list(range(200_000))},
}


async def test_huge_or_deep_metadata_is_422(api_client, key, writer, db) -> None:
    for case, metadata in HUGE_OR_DEEP_METADATA.items():
        entry = {"service_name": "s", "level": "INFO", "message": "m", "metadata": metadata}
        response = await api_client.post("/api/v1/logs", json=entry, headers=key_headers(key))
        assert_clean_refusal(response, 422)
        assert response.json()["errors"][0]["field"].startswith("metadata"), case
    await writer.drain()
    assert rows(db) == 0


async def test_json_nested_beyond_the_decoders_depth_is_refused(
    api_client, key, admin_key, writer, db
) -> None:
    for depth in (1_000, 100_000):
        body = b'{"a":' * depth + b"1" + b"}" * depth
        array = b"[" * depth + b"]" * depth
        for path in ("/api/v1/logs", "/api/v1/logs/batch", "/api/v1/admin/tenants"):
            headers = key_headers(admin_key if "admin" in path else key)
            for content in (body, array):
                response = await api_client.post(path, content=content, headers=headers)
                assert_clean_refusal(response, 400, 422)
    await writer.drain()
    assert rows(db) == 0
    await assert_healthy(api_client)


MALFORMED_BODIES = {
    "bad-utf8": b'{"service_name": "s", "level": "INFO", "message": "\xff\xfe bad"}',
    "bad-utf8-name": b'{"service_name": "s\xc3\x28", "level": "INFO", "message": "m"}',
    "bom-garbage": b"\xef\xbb\xbf\xff{}",
    "raw-nul": b'{"service_name": "s", "level": "INFO", "message": "raw\x00nul"}',
    "trailing-comma": b'{"service_name": "s", "level": "INFO", "message": "m",}',
    "empty": b"",
    "null": b"null",
    "array": b"[1, 2, 3]",
}


async def test_malformed_bodies_are_400_or_422(api_client, key, writer, db) -> None:
    for path in ("/api/v1/logs", "/api/v1/logs/batch"):
        for case, body in MALFORMED_BODIES.items():
            response = await api_client.post(path, content=body, headers=key_headers(key))
            assert 400 <= response.status_code < 500, (path, case)
            assert_clean_refusal(response, 400, 422)
    await writer.drain()
    assert rows(db) == 0


async def test_escaped_nul_characters_are_422(api_client, key, writer, db) -> None:
    entry: dict[str, Any] = {"service_name": "s", "level": "INFO", "message": "m"}
    cases: list[dict[str, Any]] = [
        {**entry, "message": "a\u0000b"},
        {**entry, "service_name": "a\u0000b"},
        {**entry, "trace_id": "a\u0000b"},
        {**entry, "metadata": {"a\u0000b": 1}},
        {**entry, "metadata": {"a": ["b\u0000c"]}},
    ]
    for case in cases:
        response = await api_client.post("/api/v1/logs", json=case, headers=key_headers(key))
        assert response.status_code == 422, case
        assert_clean_refusal(response, 422)
    await writer.drain()
    assert rows(db) == 0


async def test_lone_surrogate_escapes_are_refused(api_client, key, writer, db) -> None:
    body = b'{"service_name": "s", "level": "INFO", "message": "\\ud800"}'
    response = await api_client.post("/api/v1/logs", content=body, headers=key_headers(key))
    assert_clean_refusal(response, 400, 422)
    await writer.drain()
    assert rows(db) == 0


async def test_a_10_mb_message_is_refused_and_the_process_stays_healthy(
    api_client, api_settings, key, writer, db
) -> None:
    message = "x" * 10_000_000
    entry = {"service_name": "s", "level": "INFO", "message": message}
    response = await api_client.post("/api/v1/logs", json=entry, headers=key_headers(key))
    assert_clean_refusal(response, 422)
    too_big = {
        "service_name": "s",
        "level": "INFO",
        "message": "x" * (api_settings.max_body_bytes + 1),
    }
    response = await api_client.post("/api/v1/logs", json=too_big, headers=key_headers(key))
    assert_clean_refusal(response, 413)
    await writer.drain()
    assert rows(db) == 0
    await assert_healthy(api_client)


async def test_negative_and_huge_page_sizes_are_never_a_server_error(
    api_client, key, admin_key
) -> None:
    """Negative, non-numeric or huge: a 4xx problem, never a 5xx."""
    document = (await api_client.get("/schema/openapi.json")).json()
    paging = {"page", "page_size", "limit", "offset", "before_id"}
    tried = 0
    for path, operations in document["paths"].items():
        if "{" in path or not path.startswith("/api/v1/") or path.endswith("/stream"):
            continue
        operation = operations.get("get")
        if operation is None:
            continue
        names = [p["name"] for p in operation.get("parameters", []) if p["name"] in paging]
        # Admin routes refuse the tenant's key (403) before reading any parameter.
        headers = key_headers(admin_key if conventional_scope("GET", path) == "admin" else key)
        for name in names:
            for value in ("-1", "-99999999999999999999", "abc"):
                response = await api_client.get(path, params={name: value}, headers=headers)
                assert_clean_refusal(response, 400, 422)
                tried += 1
            if name == "before_id":
                continue  # a bound ("ids below this"), not a size: any large value is valid
            for value in ("99999999999999999999999", str(2**63), str(2**31), "1e9"):
                response = await api_client.get(path, params={name: value}, headers=headers)
                assert_clean_refusal(response, 400, 422)
                tried += 1
    assert tried >= 20


UNKNOWN_FIELDS = [
    ("/api/v1/logs", {"service_name": "s", "level": "INFO", "message": "m", "evil": 1}),
    ("/api/v1/logs/batch", {"entries": [], "also": 1}),
    (
        "/api/v1/logs/batch",
        {"entries": [{"service_name": "s", "level": "INFO", "message": "m", "x": 1}]},
    ),
    ("/api/v1/logs/query", {"search": "a", "drop_table": True}),
    ("/api/v1/admin/tenants", {"name": "n", "is_admin": True}),
    ("/api/v1/admin/keys", {"tenant_id": str(uuid.UUID(int=0)), "scopes": ["admin"], "x": 1}),
]


async def test_unknown_fields_are_refused(api_client, key, admin_key, writer, db) -> None:
    for path, body in UNKNOWN_FIELDS:
        headers = key_headers(admin_key if "admin" in path else key)
        response = await api_client.post(path, json=body, headers=headers)
        assert 400 <= response.status_code < 500, (path, body)
        assert_clean_refusal(response, 400, 422)
    await writer.drain()
    assert rows(db) == 0
    assert db.execute("SELECT count(*) FROM tenants WHERE name = 'n'").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM api_keys").fetchone() == (2,)  # bootstrap, key


WRONG_CONTENT_TYPES = [
    "text/plain",
    "application/xml",
    "multipart/form-data; boundary=x",
    "application/x-www-form-urlencoded",
]


async def test_wrong_content_types_are_refused(api_client, key, admin_key, writer, db) -> None:
    body = json.dumps({"service_name": "s", "level": "INFO", "message": "m", "name": "n"})
    for path in ("/api/v1/logs", "/api/v1/logs/batch", "/api/v1/admin/tenants"):
        for content_type in WRONG_CONTENT_TYPES:
            headers = {
                **key_headers(admin_key if "admin" in path else key),
                "Content-Type": content_type,
            }
            response = await api_client.post(path, content=body, headers=headers)
            assert 400 <= response.status_code < 500, (path, content_type)
            assert_clean_refusal(response, 400, 415)
    await writer.drain()
    assert rows(db) == 0
    assert db.execute("SELECT count(*) FROM tenants WHERE name = 'n'").fetchone() == (0,)


async def test_an_internal_error_is_a_500_problem_with_a_correlation_id(api_settings, caplog):
    @get("/api/v1/logs/explode")
    async def explode() -> None:
        raise RuntimeError("SELECT secret FROM api_keys WHERE key_hash = 'x'")

    app = create_app(api_settings)
    app.register(explode)
    async with AsyncTestClient(app=app) as client:
        tenant = await add_tenant(api_settings)
        key = await add_key(api_settings, tenant, "query")
        with caplog.at_level(logging.ERROR, logger="gateway.errors"):
            response = await client.get("/api/v1/logs/explode", headers=key_headers(key))
        assert response.status_code == 500
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        correlation_id = problem["correlation_id"]
        assert correlation_id in problem["detail"]
        assert "secret" not in response.text and "RuntimeError" not in response.text
        assert not [s for s in INTERNALS if s in response.text]
        assert any(correlation_id in r.getMessage() for r in caplog.records)
        await assert_healthy(client)
