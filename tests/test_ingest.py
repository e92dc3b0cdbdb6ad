"""Ingest: what is accepted is stored with every field intact; what is bad is refused."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import psycopg
import pytest

from tests.conftest import OTHER_TENANT, TENANT, tenant_headers
from tests.datagen import load_gen_logs

SEED_CURL_BODY = {"service_name": "my-service", "level": "INFO", "message": "Hello World"}


def count_rows(db: psycopg.Connection) -> int:
    row = db.execute("SELECT count(*) FROM log_entries").fetchone()
    assert row is not None
    return int(row[0])


async def test_seed_curl_example_is_stored(client, writer, db) -> None:
    response = await client.post("/api/v1/logs", json=SEED_CURL_BODY, headers=tenant_headers())
    assert response.status_code == 202
    entry_id = uuid.UUID(response.json()["id"])
    assert entry_id.version == 7
    await writer.drain()
    row = db.execute(
        "SELECT tenant_id, service_name, level, message, timestamp FROM log_entries WHERE id = %s",
        (entry_id,),
    ).fetchone()
    assert row is not None
    assert row[:4] == (TENANT, "my-service", 2, "Hello World")
    assert abs(row[4] - datetime.now(UTC)) < timedelta(minutes=1)


async def test_thousand_entry_batch_keeps_every_field(client, writer, db) -> None:
    gen = load_gen_logs()
    entries = list(gen.generate(1000, seed=7, days=2, tenants=1))
    for e in entries:
        e["tenant_id"] = str(TENANT)
    response = await client.post(
        "/api/v1/logs/batch", json={"entries": entries}, headers=tenant_headers()
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["accepted"] == 1000 and body["rejected"] == 0
    await writer.drain()
    stored = {
        str(r[0]): r
        for r in db.execute(
            "SELECT id, service_name, level, message, timestamp, trace_id, span_id, user_id, "
            "request_id, metadata, source, host, environment FROM log_entries"
        )
    }
    assert len(stored) == 1000
    levels = {"DEBUG": 1, "INFO": 2, "WARN": 3, "ERROR": 4, "FATAL": 5}
    for entry_id, sent in zip(body["ids"], entries, strict=True):
        row = stored[entry_id]
        assert row[1] == sent["service_name"]
        assert row[2] == levels[sent["level"]]
        assert row[3] == sent["message"]
        assert row[4] == datetime.fromisoformat(sent["timestamp"])
        assert row[5:9] == (sent["trace_id"], sent["span_id"], sent["user_id"], sent["request_id"])
        assert row[9] == sent["metadata"]
        assert row[10:] == (sent["source"], sent["host"], sent["environment"])
    counts = db.execute("SELECT sum(count) FROM log_counts WHERE tenant_id = %s", (TENANT,))
    assert counts.fetchone() == (1000,)


async def test_bare_json_array_is_a_batch(client, writer, db) -> None:
    response = await client.post(
        "/api/v1/logs/batch", json=[SEED_CURL_BODY, SEED_CURL_BODY], headers=tenant_headers()
    )
    assert response.status_code == 202
    assert response.json()["accepted"] == 2
    await writer.drain()
    assert count_rows(db) == 2


async def test_partly_invalid_batch_stores_the_valid_and_reports_the_rest(
    client, writer, db
) -> None:
    entries = [
        SEED_CURL_BODY,
        {"service_name": "svc", "level": "LOUD", "message": "x"},
        {"service_name": "svc", "level": "warning", "message": "disk 91% full"},
        {"service_name": "svc", "message": "no level"},
        {
            "service_name": "svc",
            "level": "INFO",
            "message": "m",
            "timestamp": "2024-01-15T10:30:00",
        },
    ]
    response = await client.post(
        "/api/v1/logs/batch", json={"entries": entries}, headers=tenant_headers()
    )
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 2 and body["rejected"] == 3
    assert [(e["index"], e["field"]) for e in body["errors"]] == [
        (1, "level"),
        (3, "level"),
        (4, "timestamp"),
    ]
    await writer.drain()
    assert sorted(r[0] for r in db.execute("SELECT level FROM log_entries")) == [2, 3]


def _entry(**overrides: object) -> dict[str, object]:
    return {**SEED_CURL_BODY, **overrides}


BAD_SINGLE_ENTRIES = [
    ("missing service_name", {"level": "INFO", "message": "m"}, 422, "service_name"),
    ("missing message", {"service_name": "s", "level": "INFO"}, 422, "message"),
    ("empty message", _entry(message="   "), 422, "message"),
    ("unknown level", _entry(level="VERBOSE"), 422, "level"),
    ("level not a string", _entry(level=3), 422, "level"),
    ("naive timestamp", _entry(timestamp="2026-01-15T10:30:00"), 422, "timestamp"),
    ("not a timestamp", _entry(timestamp="yesterday"), 422, "timestamp"),
    ("too old", _entry(timestamp="2001-01-01T00:00:00Z"), 422, "timestamp"),
    ("far future", _entry(timestamp="2999-01-01T00:00:00Z"), 422, "timestamp"),
    ("id not a uuid", _entry(id="42"), 422, "id"),
    ("unknown field", _entry(colour="red"), 422, "colour"),
    ("service name too long", _entry(service_name="s" * 129), 422, "service_name"),
    ("message too long", _entry(message="m" * (64 * 1024 + 1)), 422, "message"),
    ("NUL in message", _entry(message="a\x00b"), 422, "message"),
    ("NUL in metadata", _entry(metadata={"k": "a\x00b"}), 422, "metadata.k"),
    ("metadata not an object", _entry(metadata=[1, 2]), 422, "metadata"),
    (
        "metadata too deep",
        _entry(metadata={"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}),
        422,
        "metadata.a.b.c.d.e.f.g.h",
    ),
    ("metadata too many keys", _entry(metadata={f"k{i}": i for i in range(65)}), 422, "metadata"),
    ("foreign tenant_id", _entry(tenant_id=str(OTHER_TENANT)), 422, "tenant_id"),
]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [case[1:] for case in BAD_SINGLE_ENTRIES],
    ids=[case[0] for case in BAD_SINGLE_ENTRIES],
)
async def test_bad_entry_is_refused_with_its_field(client, writer, db, body, status, field) -> None:
    response = await client.post("/api/v1/logs", json=body, headers=tenant_headers())
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status
    assert problem["errors"][0]["field"] == field
    assert problem["errors"][0]["reason"]
    await writer.drain()
    assert count_rows(db) == 0


BAD_REQUESTS = [
    ("malformed JSON", "/api/v1/logs", b'{"service_name": ', {}, 400),
    ("malformed batch JSON", "/api/v1/logs/batch", b"[{,]", {}, 400),
    ("batch not a list", "/api/v1/logs/batch", b'{"entries": 5}', {}, 400),
    ("empty batch", "/api/v1/logs/batch", b'{"entries": []}', {}, 422),
    ("empty body", "/api/v1/logs/batch", b"", {}, 400),
    (
        "invalid UTF-8",
        "/api/v1/logs",
        b'{"service_name":"\xff","level":"INFO","message":"m"}',
        {},
        400,
    ),
    (
        "lone surrogate",
        "/api/v1/logs",
        b'{"service_name":"s","level":"INFO","message":"\\ud800"}',
        {},
        400,
    ),
    ("no tenant", "/api/v1/logs", msgspec.json.encode(SEED_CURL_BODY), {"X-Tenant-ID": ""}, 401),
    (
        "tenant not a uuid",
        "/api/v1/logs",
        msgspec.json.encode(SEED_CURL_BODY),
        {"X-Tenant-ID": "tenant-uuid"},
        400,
    ),
    (
        "wrong content type",
        "/api/v1/logs",
        msgspec.json.encode(SEED_CURL_BODY),
        {"Content-Type": "text/plain"},
        415,
    ),
    (
        "bad idempotency key",
        "/api/v1/logs",
        msgspec.json.encode(SEED_CURL_BODY),
        {"Idempotency-Key": "x" * 200},
        400,
    ),
]


@pytest.mark.parametrize(
    ("path", "body", "headers", "status"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
async def test_bad_request_is_a_problem_and_stores_nothing(
    client, writer, db, path, body, headers, status
) -> None:
    response = await client.post(path, content=body, headers={**tenant_headers(), **headers})
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["detail"]
    await writer.drain()
    assert count_rows(db) == 0


async def test_body_over_the_limit_is_413(settings, writer, db) -> None:
    from dataclasses import replace

    from litestar.testing import AsyncTestClient

    from services.gateway.app import create_app

    small = replace(settings, max_body_bytes=2048)
    async with AsyncTestClient(app=create_app(small)) as client:
        body = {"entries": [SEED_CURL_BODY] * 100}
        response = await client.post("/api/v1/logs/batch", json=body, headers=tenant_headers())
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/problem+json")
    await writer.drain()
    assert count_rows(db) == 0


async def test_idempotency_key_replays_the_first_answer(client, writer, db) -> None:
    headers = {**tenant_headers(), "Idempotency-Key": "batch-0001"}
    body = {"entries": [SEED_CURL_BODY] * 3}
    first = await client.post("/api/v1/logs/batch", json=body, headers=headers)
    second = await client.post("/api/v1/logs/batch", json=body, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert second.headers.get("idempotent-replayed") == "true"
    await writer.drain()
    assert count_rows(db) == 3


async def test_entry_for_a_day_without_partition_creates_it(client, writer, db) -> None:
    old = datetime.now(UTC) - timedelta(days=12)
    response = await client.post(
        "/api/v1/logs",
        json=_entry(timestamp=old.isoformat()),
        headers=tenant_headers(),
    )
    assert response.status_code == 202
    await writer.drain()
    assert count_rows(db) == 1
    name = "log_entries_p" + old.strftime("%Y%m%d")
    assert db.execute("SELECT to_regclass(%s)", (name,)).fetchone() == (name,)
