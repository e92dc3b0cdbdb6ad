"""Limits per tenant: ingest rate shared by every gateway (429 + Retry-After), request
and entry sizes (413 / per-entry errors), queries at once (429); each names its limit."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import httpx
import psycopg
from litestar import get
from litestar.testing import AsyncTestClient

from services.gateway.admin.tenancy import TenantLimits
from services.gateway.app import create_app
from tests.keyring import add_key, add_tenant, key_headers


def rows(db: psycopg.Connection) -> int:
    (count,) = db.execute("SELECT count(*) FROM log_entries").fetchone()
    return int(count)


def batch(n: int, message: str = "m") -> dict[str, Any]:
    return {"entries": [{"service_name": "s", "level": "INFO", "message": message}] * n}


async def tenant_key(settings, **limits: int) -> str:
    tenant = await add_tenant(settings, limits=TenantLimits(**limits))
    return await add_key(settings, tenant, "ingest", "query")


def assert_limited(response: Any, status: int, limit: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["limit"] == limit and limit in problem["detail"]
    return problem


async def test_logs_over_the_rate_are_429_with_retry_after_and_not_stored(
    api_client, api_settings, writer, db
) -> None:
    # 10 logs/s with a 2 s burst: 20 logs at once, then nothing until the bucket refills.
    key = await tenant_key(api_settings, ingest_logs_per_second=10, max_batch_entries=10)
    answers = [
        await api_client.post("/api/v1/logs/batch", json=batch(10), headers=key_headers(key))
        for _ in range(3)
    ]
    assert [a.status_code for a in answers[:2]] == [202, 202]
    problem = assert_limited(answers[2], 429, "ingest_logs_per_second")
    assert problem["limit_value"] == 10
    assert 1 <= int(answers[2].headers["retry-after"]) <= 2
    await writer.drain()
    assert rows(db) == 20


async def test_the_rate_bucket_is_shared_by_every_gateway(
    api_client, api_settings, writer, db
) -> None:
    key = await tenant_key(api_settings, ingest_logs_per_second=5, max_batch_entries=5)
    async with AsyncTestClient(app=create_app(api_settings)) as other_gateway:
        answers = []
        for client in (api_client, other_gateway, api_client, other_gateway):
            answers.append(
                await client.post("/api/v1/logs/batch", json=batch(5), headers=key_headers(key))
            )
    assert [a.status_code for a in answers] == [202, 202, 429, 429]
    await writer.drain()
    assert rows(db) == 10


async def test_only_accepted_requests_are_charged_to_the_rate(api_settings, writer) -> None:
    """A 503 (backlog full) and an Idempotency-Key replay leave the tenant's bucket as it
    was; a replay is answered even when the bucket is empty."""
    # One shard holding one message, and no writer running until drain(): the second
    # request finds the backlog full.
    config = replace(api_settings, stream_shards=1, stream_max_backlog=1)
    # 1 log/s with a 10-log bucket (max_batch_entries): room for two batches of 5, and
    # 5 s before a third would fit, far longer than this test takes.
    key = await tenant_key(config, ingest_logs_per_second=1, max_batch_entries=10)
    async with AsyncTestClient(app=create_app(config)) as gateway:

        async def send(idempotency_key: str | None = None) -> Any:
            headers = key_headers(key)
            if idempotency_key:
                headers["Idempotency-Key"] = idempotency_key
            return await gateway.post("/api/v1/logs/batch", json=batch(5), headers=headers)

        first = await send("first")
        assert first.status_code == 202, first.text
        refused = await send()
        assert refused.status_code == 503, refused.text
        replayed = await send("first")
        assert replayed.status_code == 202 and replayed.headers["idempotent-replayed"] == "true"
        assert replayed.json() == first.json()
        assert await writer.drain() == 1  # the first batch's message: room again

        # Had the 503 or the replay been charged, the bucket would be empty now.
        second = await send()
        assert second.status_code == 202, second.text
        assert_limited(await send(), 429, "ingest_logs_per_second")
        at_limit = await send("first")
        assert at_limit.status_code == 202 and at_limit.json() == first.json()


async def test_bytes_over_the_rate_are_429_naming_the_byte_limit(api_client, api_settings):
    key = await tenant_key(api_settings, ingest_bytes_per_second=1000, max_body_bytes=1500)
    body = batch(1, "x" * 800)
    answers = [
        await api_client.post("/api/v1/logs/batch", json=body, headers=key_headers(key))
        for _ in range(3)
    ]
    assert [a.status_code for a in answers[:2]] == [202, 202]
    assert_limited(answers[2], 429, "ingest_bytes_per_second")


async def test_other_tenants_keep_their_own_bucket(api_client, api_settings) -> None:
    slow = await tenant_key(api_settings, ingest_logs_per_second=1, max_batch_entries=2)
    other = await tenant_key(api_settings)
    for _ in range(2):
        await api_client.post("/api/v1/logs/batch", json=batch(2), headers=key_headers(slow))
    refused = await api_client.post("/api/v1/logs/batch", json=batch(2), headers=key_headers(slow))
    assert refused.status_code == 429
    fine = await api_client.post("/api/v1/logs/batch", json=batch(2), headers=key_headers(other))
    assert fine.status_code == 202


async def test_body_over_the_tenants_limit_is_413_naming_it(
    api_client, api_settings, writer, db
) -> None:
    key = await tenant_key(api_settings, max_body_bytes=300)
    response = await api_client.post(
        "/api/v1/logs/batch", json=batch(1, "x" * 400), headers=key_headers(key)
    )
    problem = assert_limited(response, 413, "max_body_bytes")
    assert problem["limit_value"] == 300
    single = await api_client.post(
        "/api/v1/logs",
        json={"service_name": "s", "level": "INFO", "message": "x" * 400},
        headers=key_headers(key),
    )
    assert_limited(single, 413, "max_body_bytes")
    await writer.drain()
    assert rows(db) == 0


async def test_batch_over_the_tenants_limit_is_413_naming_it(api_client, api_settings) -> None:
    key = await tenant_key(api_settings, max_batch_entries=3)
    response = await api_client.post("/api/v1/logs/batch", json=batch(4), headers=key_headers(key))
    assert_limited(response, 413, "max_batch_entries")
    fits = await api_client.post("/api/v1/logs/batch", json=batch(3), headers=key_headers(key))
    assert fits.status_code == 202


async def test_an_entry_over_the_tenants_entry_size_is_refused_alone(
    api_client, api_settings, writer, db
) -> None:
    key = await tenant_key(api_settings, max_entry_bytes=500)
    entries = batch(1)["entries"] + batch(1, "y" * 600)["entries"] + batch(1)["entries"]
    response = await api_client.post(
        "/api/v1/logs/batch", json={"entries": entries}, headers=key_headers(key)
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 1)
    (error,) = body["errors"]
    assert error["index"] == 1 and "max_entry_bytes" in error["reason"]
    single = await api_client.post(
        "/api/v1/logs",
        json={"service_name": "s", "level": "INFO", "message": "y" * 600},
        headers=key_headers(key),
    )
    assert single.status_code == 422 and "max_entry_bytes" in single.text
    await writer.drain()
    assert rows(db) == 2


async def test_metadata_over_the_tenants_key_limit_is_refused(api_client, api_settings) -> None:
    key = await tenant_key(api_settings, max_metadata_keys=3)
    entry = {"service_name": "s", "level": "INFO", "message": "m"}
    ok = await api_client.post(
        "/api/v1/logs",
        json={**entry, "metadata": {"a": 1, "b": 2, "c": 3}},
        headers=key_headers(key),
    )
    too_many = await api_client.post(
        "/api/v1/logs",
        json={**entry, "metadata": {"a": 1, "b": 2, "c": 3, "d": 4}},
        headers=key_headers(key),
    )
    assert ok.status_code == 202
    assert too_many.status_code == 422
    assert too_many.json()["errors"][0]["field"] == "metadata"


async def test_a_changed_limit_applies_to_the_next_request(
    api_client, api_settings, admin_key
) -> None:
    tenant = await add_tenant(api_settings)
    key = await add_key(api_settings, tenant, "ingest")
    assert (
        await api_client.post("/api/v1/logs/batch", json=batch(5), headers=key_headers(key))
    ).status_code == 202
    await api_client.put(
        f"/api/v1/admin/tenants/{tenant}/limits",
        json={"max_batch_entries": 4},
        headers=key_headers(admin_key),
    )
    response = await api_client.post("/api/v1/logs/batch", json=batch(5), headers=key_headers(key))
    assert_limited(response, 413, "max_batch_entries")


async def test_queries_over_the_tenants_concurrency_are_429(api_settings) -> None:
    """A stand-in query route (under /api/v1/logs) holds its slot until released."""
    entered, release = asyncio.Semaphore(0), asyncio.Event()

    @get("/api/v1/logs/slow-probe")
    async def slow_probe() -> dict[str, str]:
        entered.release()
        await release.wait()
        return {"status": "done"}

    app = create_app(api_settings)
    app.register(slow_probe)
    key = await tenant_key(api_settings, max_concurrent_queries=2)
    other = await tenant_key(api_settings, max_concurrent_queries=2)
    # httpx's own ASGI transport: requests run concurrently on this loop (the test
    # client's transport would serialise them). The lifespan is entered by hand.
    transport = httpx.ASGITransport(app=app)
    async with (
        app.lifespan(),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):

        async def call(k: str) -> Any:
            return await client.get("/api/v1/logs/slow-probe", headers=key_headers(k))

        running = [asyncio.create_task(call(key)) for _ in range(2)]
        async with asyncio.timeout(10):
            for _ in range(2):
                await entered.acquire()
        refused = await call(key)
        problem = assert_limited(refused, 429, "max_concurrent_queries")
        assert refused.headers["retry-after"] == "1" and problem["limit_value"] == 2
        others = asyncio.create_task(call(other))  # another tenant is not held back
        async with asyncio.timeout(10):
            await entered.acquire()
        release.set()
        assert [r.status_code for r in await asyncio.gather(*running, others)] == [200] * 3
        assert (await call(key)).status_code == 200
