"""The query API: every filter against a dataset with known answers, pages and cursors,
the trace/request/id lookups, tenant scoping, time handling and the store's protection."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from services.gateway.problems import status_of
from services.gateway.query import pages
from services.gateway.query.cache import QueryCache
from services.gateway.query.guard import QueryGuard
from services.gateway.query.pages import SEARCH_COUNT_CAP
from services.gateway.query.store import count_within
from services.writer.loop import Writer
from shared.db import make_pool
from shared.errors import Unavailable
from shared.filters import LogFilter, compile_filter
from shared.redis_keys import RedisKeys
from shared.settings import Settings
from tests.conftest import OTHER_TENANT, TENANT, tenant_headers
from tests.datagen import load_gen_logs

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)


def ago(**delta: float) -> str:
    return (NOW - timedelta(**delta)).isoformat().replace("+00:00", "Z")


# label -> entry. Every filter below selects a known subset of these.
DATASET: dict[str, dict[str, Any]] = {
    "auth_error": {
        "service_name": "auth-service", "level": "ERROR",
        "message": "Failed to authenticate user alice", "timestamp": ago(minutes=10),
        "trace_id": "trace-1", "span_id": "span-1", "user_id": "alice", "request_id": "req-1",
        "environment": "production", "host": "pod-a", "source": "auth.go:45",
        "metadata": {"error_code": "AUTH_001", "status": 401},
    },
    "auth_info": {
        "service_name": "auth-service", "level": "INFO", "message": "User alice logged in",
        "timestamp": ago(minutes=9), "trace_id": "trace-1", "span_id": "span-2",
        "user_id": "alice", "request_id": "req-1", "environment": "production", "host": "pod-a",
        "metadata": {"status": 200},
    },
    "pay_warn": {
        "service_name": "payment", "level": "WARN",
        "message": "Payment retry: connection refused by bank", "timestamp": ago(minutes=8),
        "trace_id": "trace-2", "user_id": "bob", "request_id": "req-2",
        "environment": "staging", "host": "pod-b",
        "metadata": {"error_code": "PAY_014", "retry": True},
    },
    "pay_debug": {
        "service_name": "payment", "level": "DEBUG", "message": "Cache miss for key payment:42",
        "timestamp": ago(minutes=7), "trace_id": "trace-2", "user_id": "bob",
        "request_id": "req-2", "environment": "staging", "host": "pod-b",
    },
    "gw_fatal": {
        "service_name": "gateway", "level": "FATAL", "message": "Out of memory: 100% of heap used",
        "timestamp": ago(minutes=6), "environment": "development", "metadata": {"ratio": 1.5},
    },
    "gw_old": {
        "service_name": "gateway", "level": "INFO", "message": "GET /health completed in 5 ms",
        "timestamp": ago(days=2), "trace_id": "trace-3", "environment": "production",
    },
    "auth_caps": {
        "service_name": "auth-service", "level": "ERROR",
        "message": "AUTHENTICATION failed for carol", "timestamp": ago(hours=3),
        "trace_id": "trace-4", "user_id": "carol", "environment": "production",
        "metadata": {"error_code": "AUTH_002", "status": "401"},
    },
}  # fmt: skip
# The same trace, request and user ids in another tenant: never visible to TENANT.
OTHER_DATASET = [
    DATASET["auth_error"] | {"message": "other tenant: Failed to authenticate user alice"},
    DATASET["gw_fatal"] | {"service_name": "other-secret-service", "trace_id": "trace-1"},
]
RECENT = {"auth_error", "auth_info", "pay_warn", "pay_debug", "gw_fatal", "auth_caps"}

# GET query string -> the labels it selects (newest first).
CASES: list[tuple[str, set[str]]] = [
    ("", RECENT),  # default window: the last 24 hours
    ("start_time=now-5d", set(DATASET)),
    (f"start_time={ago(minutes=30)}", RECENT - {"auth_caps"}),
    ("end_time=now-1h", {"auth_caps"}),  # 24 hours before end_time
    (f"start_time={ago(days=3)}&end_time={ago(days=1)}", {"gw_old"}),
    ("service_name=auth-service", {"auth_error", "auth_info", "auth_caps"}),
    ("services=payment,gateway", {"pay_warn", "pay_debug", "gw_fatal"}),
    ("service_name=payment&service_name=gateway", {"pay_warn", "pay_debug", "gw_fatal"}),
    ("level=ERROR", {"auth_error", "auth_caps"}),
    ("level=error", {"auth_error", "auth_caps"}),
    ("levels=WARN&levels=FATAL", {"pay_warn", "gw_fatal"}),
    ("min_level=WARN", {"auth_error", "pay_warn", "gw_fatal", "auth_caps"}),
    ("min_level=warning&start_time=now-5d", {"auth_error", "pay_warn", "gw_fatal", "auth_caps"}),
    ("trace_id=trace-1", {"auth_error", "auth_info"}),
    ("span_id=span-2", {"auth_info"}),
    ("user_id=bob", {"pay_warn", "pay_debug"}),
    ("request_id=req-2", {"pay_warn", "pay_debug"}),
    ("environment=staging", {"pay_warn", "pay_debug"}),
    ("host=pod-a", {"auth_error", "auth_info"}),
    ("source=auth.go:45", {"auth_error"}),
    ("search=authenticate", {"auth_error"}),
    ("search=AUTHENT", {"auth_error", "auth_caps"}),
    ("search=%22connection%20refused%22", {"pay_warn"}),
    ("search=refused%20payment", {"pay_warn"}),  # every word, anywhere, any order
    ("search=%22refused%20payment%22", set()),  # a phrase is one substring
    ("search=100%25", {"gw_fatal"}),  # LIKE wildcards are literal
    ("search=payment:4_", set()),
    ("search=payment:42", {"pay_debug"}),
    ("metadata.error_code=AUTH_001", {"auth_error"}),
    ("metadata.status=401", {"auth_error"}),  # typed: the number 401
    ("metadata.status=%22401%22", {"auth_caps"}),  # quoted: the string "401"
    ("metadata.retry=true", {"pay_warn"}),
    ("metadata.ratio=1.5", {"gw_fatal"}),
    ("metadata.error_code=AUTH_001&metadata.status=200", set()),
    ("service_name=auth-service&min_level=ERROR&search=fail", {"auth_error", "auth_caps"}),
    ("levels=INFO,DEBUG&environment=staging", {"pay_debug"}),
    ("user_id=alice&search=logged&start_time=now-1h", {"auth_info"}),
]


async def ingest(
    client: AsyncTestClient, writer: Writer, entries: list[dict[str, Any]], tenant: uuid.UUID
) -> list[str]:
    ids: list[str] = []
    for start in range(0, len(entries), 10_000):
        response = await client.post(
            "/api/v1/logs/batch",
            json={"entries": entries[start : start + 10_000]},
            headers=tenant_headers(tenant),
        )
        assert response.status_code == 202, response.text
        ids.extend(response.json()["ids"])
    await writer.drain()
    return ids


@pytest.fixture
async def dataset(client: AsyncTestClient, writer: Writer) -> dict[str, str]:
    """The known entries stored: id -> label."""
    ids = await ingest(client, writer, list(DATASET.values()), TENANT)
    await ingest(client, writer, OTHER_DATASET, OTHER_TENANT)
    return dict(zip(ids, DATASET, strict=True))


def labels(body: dict[str, Any], dataset: dict[str, str]) -> list[str]:
    return [dataset[e["id"]] for e in body["entries"]]


def newest_first(selected: set[str]) -> list[str]:
    return sorted(selected, key=lambda label: DATASET[label]["timestamp"], reverse=True)


async def test_each_filter_alone_and_combined_selects_exactly_its_entries(
    client: AsyncTestClient, dataset: dict[str, str]
) -> None:
    for query, expected in CASES:
        response = await client.get(f"/api/v1/logs?{query}", headers=tenant_headers())
        assert response.status_code == 200, (query, response.text)
        body = response.json()
        assert labels(body, dataset) == newest_first(expected), query
        assert (body["total_count"], body["total_is_estimate"]) == (len(expected), False), query


def body_of(query: str) -> dict[str, Any]:
    """The POST /query body equivalent to a GET query string of CASES."""
    from urllib.parse import parse_qsl

    body: dict[str, Any] = {}
    for key, value in parse_qsl(query):
        if key.startswith("metadata."):
            typed: Any = value.strip('"') if value.startswith('"') else value
            if value in ("true", "401", "200"):
                typed = {"true": True, "401": 401, "200": 200}[value]
            elif value == "1.5":
                typed = 1.5
            body.setdefault("metadata", {})[key.removeprefix("metadata.")] = typed
        elif key in ("services", "levels"):
            body.setdefault(key, []).extend(value.split(","))
        elif key == "service_name" and "service_name" in body:
            body.setdefault("services", []).append(value)
        else:
            body[key] = value
    return body


async def test_query_body_takes_the_same_filters(
    client: AsyncTestClient, dataset: dict[str, str]
) -> None:
    for query, expected in CASES:
        response = await client.post(
            "/api/v1/logs/query", json=body_of(query), headers=tenant_headers()
        )
        assert response.status_code == 200, (query, response.text)
        assert labels(response.json(), dataset) == newest_first(expected), query


async def test_seed_query_body_with_the_callers_tenant_id_is_accepted(
    client: AsyncTestClient, dataset: dict[str, str]
) -> None:
    seed_body = {
        "tenant_id": str(TENANT), "service_name": "auth-service", "level": "ERROR",
        "min_level": "WARN", "start_time": ago(hours=1), "end_time": ago(seconds=-60),
        "trace_id": "trace-1", "user_id": "alice", "request_id": "req-1",
        "search": "authenticate", "environment": "production", "page": 1, "page_size": 100,
    }  # fmt: skip
    response = await client.post("/api/v1/logs/query", json=seed_body, headers=tenant_headers())
    assert response.status_code == 200, response.text
    assert labels(response.json(), dataset) == ["auth_error"]
    seed_body["tenant_id"] = str(OTHER_TENANT)
    response = await client.post("/api/v1/logs/query", json=seed_body, headers=tenant_headers())
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"


async def test_entries_come_back_in_the_seed_shape(
    client: AsyncTestClient, dataset: dict[str, str]
) -> None:
    response = await client.get("/api/v1/logs?trace_id=trace-1", headers=tenant_headers())
    entry = response.json()["entries"][1]
    sent = DATASET["auth_error"]
    assert entry == sent | {"id": entry["id"], "tenant_id": str(TENANT)}
    assert uuid.UUID(entry["id"]).version == 7


async def test_sort_asc_is_oldest_first(client: AsyncTestClient, dataset: dict[str, str]) -> None:
    response = await client.get("/api/v1/logs?sort=asc", headers=tenant_headers())
    assert labels(response.json(), dataset) == newest_first(RECENT)[::-1]
    response = await client.post(
        "/api/v1/logs/query", json={"sort": "up"}, headers=tenant_headers()
    )
    # A bad body field is 422 naming it, as ingest answers (issue 16: one error table).
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "sort"


async def test_entry_by_id_is_found_only_by_its_tenant(
    client: AsyncTestClient, dataset: dict[str, str]
) -> None:
    entry_id = next(i for i, label in dataset.items() if label == "gw_old")
    response = await client.get(f"/api/v1/logs/{entry_id}", headers=tenant_headers())
    assert response.status_code == 200
    assert response.json()["message"] == DATASET["gw_old"]["message"]
    for path, headers in [
        (f"/api/v1/logs/{entry_id}", tenant_headers(OTHER_TENANT)),
        (f"/api/v1/logs/{uuid.uuid4()}", tenant_headers()),
        ("/api/v1/logs/not-an-id", tenant_headers()),
    ]:
        response = await client.get(path, headers=headers)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/problem+json"


async def test_trace_view_lists_every_service_oldest_first(
    client: AsyncTestClient, dataset: dict[str, str]
) -> None:
    response = await client.get("/api/v1/logs/trace/trace-1", headers=tenant_headers())
    assert response.status_code == 200
    assert labels(response.json(), dataset) == ["auth_error", "auth_info"]
    old = await client.get("/api/v1/logs/trace/trace-3", headers=tenant_headers())
    assert labels(old.json(), dataset) == ["gw_old"]  # no default window: all retained days
    narrowed = await client.get(
        "/api/v1/logs/trace/trace-3?start_time=now-1d", headers=tenant_headers()
    )
    assert narrowed.status_code == 404  # no entry of the trace in that window
    response = await client.get("/api/v1/logs/request/req-2", headers=tenant_headers())
    assert labels(response.json(), dataset) == ["pay_debug", "pay_warn"][::-1]


async def test_no_endpoint_shows_another_tenants_entries(
    client: AsyncTestClient, dataset: dict[str, str]
) -> None:
    own_ids = set(dataset)
    for method, path, body in [
        ("GET", "/api/v1/logs?start_time=now-30d", None),
        ("GET", "/api/v1/logs?search=authenticate", None),
        ("POST", "/api/v1/logs/query", {"start_time": "now-30d"}),
        ("POST", "/api/v1/logs/query", {"trace_id": "trace-1", "search": "other"}),
        ("GET", "/api/v1/logs/trace/trace-1", None),
        ("GET", "/api/v1/logs/request/req-1", None),
    ]:
        response = await client.request(method, path, json=body, headers=tenant_headers())
        assert response.status_code == 200, path
        returned = {e["id"] for e in response.json()["entries"]}
        assert returned <= own_ids, path
        assert "other" not in response.text, path
        assert str(OTHER_TENANT) not in response.text, path


async def test_page_numbers_walk_the_result_without_overlap(
    client: AsyncTestClient, dataset: dict[str, str]
) -> None:
    seen: list[str] = []
    for page in (1, 2, 3):
        response = await client.get(
            f"/api/v1/logs?start_time=now-5d&page={page}&page_size=3", headers=tenant_headers()
        )
        body = response.json()
        assert (body["page"], body["page_size"], body["total_count"]) == (page, 3, 7)
        assert body["has_more"] is (page < 3)
        assert (body["next_cursor"] is not None) is (page < 3)
        seen += labels(body, dataset)
    assert seen == newest_first(set(DATASET))


async def test_a_total_counted_with_its_page_is_exact_on_every_page(
    client: AsyncTestClient, dataset: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service, host or user filter's total is counted by the page's own statement
    (pages.counted_first): the same on every numbered page, past the last one too (no
    row comes back there to carry it), and past the count cap as before: exact from the
    rollups for a service, the estimate, flagged, for any other term."""
    cases = {
        "service_name=auth-service": {"auth_error", "auth_info", "auth_caps"},
        "host=pod-a": {"auth_error", "auth_info"},
        "user_id=bob&min_level=DEBUG": {"pay_warn", "pay_debug"},
        "services=payment,gateway&min_level=WARN": {"pay_warn", "gw_fatal"},
    }
    for query, selected in cases.items():
        for page in range(1, len(selected) + 2):
            response = await client.get(
                f"/api/v1/logs?{query}&page={page}&page_size=1", headers=tenant_headers()
            )
            body = response.json()
            expected = newest_first(selected)[page - 1 : page]
            assert labels(body, dataset) == expected, (query, page)
            assert (body["total_count"], body["total_is_estimate"]) == (len(selected), False)
            assert body["has_more"] is (page < len(selected)), (query, page)
    monkeypatch.setattr(pages, "COUNT_CAP", 1)
    uncached = tenant_headers() | {"Cache-Control": "no-cache"}  # the pages above were cached
    body = (await client.get("/api/v1/logs?service_name=auth-service&page_size=1",
                             headers=uncached)).json()  # fmt: skip
    assert (body["total_count"], body["total_is_estimate"]) == (3, False)
    body = (await client.get("/api/v1/logs?host=pod-a&page_size=1", headers=uncached)).json()
    assert body["total_count"] >= 2 and body["total_is_estimate"]


async def test_cursor_walk_is_refused_with_another_filter(
    client: AsyncTestClient, dataset: dict[str, str]
) -> None:
    first = (await client.get("/api/v1/logs?page_size=2", headers=tenant_headers())).json()
    cursor = first["next_cursor"]
    second = await client.get(f"/api/v1/logs?page_size=2&cursor={cursor}", headers=tenant_headers())
    body = second.json()
    assert body["page"] == 2 and body["total_count"] == len(RECENT)
    assert labels(first, dataset) + labels(body, dataset) == newest_first(RECENT)[:4]
    for query, headers in [
        (f"service_name=payment&cursor={cursor}", tenant_headers()),
        (f"sort=asc&cursor={cursor}", tenant_headers()),
        (f"start_time=now-2h&cursor={cursor}", tenant_headers()),
        (f"cursor={cursor}", tenant_headers(OTHER_TENANT)),
        ("cursor=not-a-cursor", tenant_headers()),
        (f"cursor={cursor[:-4]}", tenant_headers()),
    ]:
        response = await client.get(f"/api/v1/logs?{query}", headers=headers)
        assert response.status_code == 400, query
        assert response.json()["errors"][0]["field"] == "cursor", query


# query string -> (status, field named in the problem)
BAD_PARAMETERS: list[tuple[str, int, str]] = [
    ("start_time=now&end_time=now-1h", 422, "start_time"),
    ("start_time=2024-01-15T10:30:00", 422, "start_time"),  # no zone
    ("end_time=tomorrow", 422, "end_time"),
    ("min_level=LOUD", 422, "min_level"),
    ("page=0", 400, "page"),
    ("page_size=0", 400, "page_size"),
    ("page=abc", 400, "page"),
    ("sort=sideways", 400, "sort"),
    ("page=2000&page_size=100", 400, "page"),  # deep offset: use the cursor
    ("servce_name=typo", 400, "servce_name"),
]


async def test_bad_parameters_are_problems_naming_the_field(client: AsyncTestClient) -> None:
    for query, status, field in BAD_PARAMETERS:
        response = await client.get(f"/api/v1/logs?{query}", headers=tenant_headers())
        assert response.status_code == status, (query, response.text)
        assert response.headers["content-type"] == "application/problem+json", query
        problem = response.json()
        assert problem["status"] == status, query
        assert problem["errors"][0]["field"] == field, query


async def test_empty_range_is_an_empty_page_and_page_size_is_bounded(
    client: AsyncTestClient, dataset: dict[str, str]
) -> None:
    response = await client.get(
        f"/api/v1/logs?start_time={ago(minutes=10)}&end_time={ago(minutes=10)}",
        headers=tenant_headers(),
    )
    assert response.status_code == 200
    assert response.json()["entries"] == [] and response.json()["total_count"] == 0
    response = await client.get("/api/v1/logs?page_size=1000", headers=tenant_headers())
    assert response.json()["page_size"] == 1000
    response = await client.get("/api/v1/logs?page_size=5000", headers=tenant_headers())
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "page_size"


async def test_closed_range_is_cached_and_a_dead_cache_still_answers(
    client: AsyncTestClient, dataset: dict[str, str], settings: Settings
) -> None:
    query = f"/api/v1/logs?start_time={ago(days=3)}&end_time={ago(minutes=5)}"
    first = await client.get(query, headers=tenant_headers())
    second = await client.get(query, headers=tenant_headers())
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
    assert first.json() == second.json()
    assert labels(first.json(), dataset) == newest_first(set(DATASET))
    dead = QueryCache(
        Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, socket_timeout=0.2),
        keys=RedisKeys.from_settings(settings),
        closed_ttl=3600,
        open_ttl=5,
        ingest_lag=timedelta(minutes=2),
        timeout=0.2,
    )
    gateway = client.app.state["gateway"]
    client.app.state["gateway"] = dataclasses.replace(gateway, query_cache=dead)
    third = await client.get(query, headers=tenant_headers())
    assert third.status_code == 200 and third.headers["x-cache"] == "off"
    assert third.json() == first.json()
    await dead.aclose()


async def test_slow_query_is_stopped_with_advice(settings: Settings) -> None:
    pool = make_pool(settings, name="guard-test", min_size=0, max_size=2)
    await pool.open()
    try:
        guard = QueryGuard(pool, concurrency=1, queue_wait_ms=50, timeout_ms=100)
        with pytest.raises(Unavailable, match="narrow the time range"):
            async with guard.read(TENANT) as conn:
                await conn.execute("SELECT pg_sleep(2)")
        # The slot was given back: the next query runs.
        async with guard.read(TENANT) as conn:
            await conn.execute("SELECT 1")
    finally:
        await pool.close()


async def test_queries_beyond_the_concurrency_limit_get_503(settings: Settings) -> None:
    pool = make_pool(settings, name="guard-test", min_size=0, max_size=2)
    await pool.open()
    try:
        guard = QueryGuard(pool, concurrency=1, queue_wait_ms=50, timeout_ms=5000)
        holding = asyncio.Event()
        release = asyncio.Event()

        async def hold() -> None:
            async with guard.read(TENANT):
                holding.set()
                await release.wait()

        task = asyncio.create_task(hold())
        await holding.wait()
        with pytest.raises(Unavailable, match="QUERY_CONCURRENCY") as raised:
            async with guard.read(TENANT):
                pass
        assert status_of(raised.value) == 503 and raised.value.retry_after == 1
        release.set()
        await task
    finally:
        await pool.close()


def test_list_and_query_are_documented_with_an_example(client: AsyncTestClient) -> None:
    schema = client.app.openapi_schema.to_schema()
    listing = schema["paths"]["/api/v1/logs"]["get"]
    names = {p["name"] for p in listing["parameters"]}
    assert {"service_name", "min_level", "search", "page", "page_size", "cursor", "sort"} <= names
    page = listing["responses"]["200"]["content"]["application/json"]
    assert page["schema"] == {"$ref": "#/components/schemas/LogPage"}
    assert page["examples"]
    query = schema["paths"]["/api/v1/logs/query"]["post"]
    assert query["requestBody"]["content"]["application/json"]["schema"]["examples"]
    assert "LogEntryOut" in schema["components"]["schemas"]


def realistic(n: int, seed: int) -> list[dict[str, Any]]:
    """n realistic entries of one tenant, spread evenly over the last 20 hours."""
    entries = list(load_gen_logs().generate(n, seed=seed, days=20 / 24, tenants=1, end=NOW))
    for entry in entries:
        del entry["tenant_id"]
    return entries


@pytest.mark.parametrize(
    ("rows", "page_size"),
    [(5_000, 100), pytest.param(50_000, 1_000, marks=pytest.mark.slow)],
)
async def test_cursor_walk_has_no_gap_or_repeat_while_logs_arrive(
    client: AsyncTestClient, writer: Writer, rows: int, page_size: int
) -> None:
    original = set(await ingest(client, writer, realistic(rows, seed=3), TENANT))
    arrivals = realistic(rows // 25, seed=4)  # dated all over the walked window
    arrived: set[str] = set()
    seen: list[str] = []
    query = f"/api/v1/logs?page_size={page_size}&min_level=DEBUG"
    body = (await client.get(query, headers=tenant_headers())).json()
    # A level filter's total is exact past the count cap too: from the rollups.
    assert (body["total_count"], body["total_is_estimate"]) == (rows, False)
    pages = 1
    while True:
        assert body["page"] == pages
        seen += [e["id"] for e in body["entries"]]
        if not body["has_more"]:
            break
        if pages % 10 == 0 and arrivals:
            batch, arrivals = arrivals[: rows // 100], arrivals[rows // 100 :]
            arrived |= set(await ingest(client, writer, batch, TENANT))
        response = await client.get(
            f"{query}&cursor={body['next_cursor']}", headers=tenant_headers()
        )
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
    assert len(seen) == len(set(seen)), "an entry was returned twice"
    assert original <= set(seen), "an entry was skipped"
    assert set(seen) <= original | arrived
    assert pages >= 50 and not arrivals


async def test_a_total_of_service_level_and_environment_is_exact_past_the_count_cap(
    client: AsyncTestClient, writer: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past COUNT_CAP (lowered here to 20) a filter of rollup dimensions only is still
    counted exactly, from the rollups, whether or not it names a service; any other term
    past the cap is reported as an estimate."""
    monkeypatch.setattr(pages, "COUNT_CAP", 20)
    entries = realistic(1_500, seed=8)
    await ingest(client, writer, entries, TENANT)
    busiest = Counter(e["service_name"] for e in entries).most_common(1)[0][0]
    cases = {
        "min_level=WARN": lambda e: e["level"] in {"WARN", "ERROR", "FATAL"},
        "levels=INFO&environment=production": (
            lambda e: e["level"] == "INFO" and e["environment"] == "production"
        ),
        f"service_name={busiest}&min_level=INFO": (
            lambda e: e["service_name"] == busiest and e["level"] != "DEBUG"
        ),
    }
    for query, matches in cases.items():
        expected = sum(1 for e in entries if matches(e))
        assert expected > 20, query
        body = (await client.get(f"/api/v1/logs?{query}", headers=tenant_headers())).json()
        assert (body["total_count"], body["total_is_estimate"]) == (expected, False), query
    # Open-ended windows are exact too: the default window ends at no time.
    body = (await client.get("/api/v1/logs?min_level=ERROR", headers=tenant_headers())).json()
    errors = sum(1 for e in entries if e["level"] in {"ERROR", "FATAL"})
    assert (body["total_count"], body["total_is_estimate"]) == (errors, False)
    body = (await client.get("/api/v1/logs?search=e", headers=tenant_headers())).json()
    assert body["total_is_estimate"] is True


async def test_a_search_total_is_counted_where_the_planner_guesses_low(
    client: AsyncTestClient, writer: Writer
) -> None:
    """In a 20k-entry tenant the planner guessed 6 matches for a word in 247 of them.
    Below SEARCH_COUNT_CAP the total is counted: exact. A word in more entries than that
    is reported as more than the cap, flagged as an estimate."""
    entries = realistic(20_000, seed=5)
    await ingest(client, writer, entries, TENANT)
    words = Counter(w for e in entries for w in {*re.findall(r"[a-z]{5,}", e["message"])})

    def matching(word: str) -> int:
        return sum(word in e["message"].lower() for e in entries)

    some = next(w for w, _ in words.most_common() if 100 <= matching(w) <= 500)
    many = next(w for w, _ in words.most_common() if matching(w) > 2 * SEARCH_COUNT_CAP)
    for word, exact in ((some, True), (many, False)):
        response = await client.get(
            "/api/v1/logs",
            params={"search": word, "page_size": "5", "start_time": "now-1d"},
            headers=tenant_headers(),
        )
        body = response.json()
        assert body["has_more"], body
        if exact:
            assert (body["total_count"], body["total_is_estimate"]) == (matching(word), False)
        else:
            assert body["total_count"] > SEARCH_COUNT_CAP and body["total_is_estimate"], word


async def test_a_search_count_out_of_time_leaves_the_query_going(
    settings: Settings, client: AsyncTestClient, writer: Writer
) -> None:
    """The count behind a search's total has a time budget of its own: past it the count
    is abandoned (the total stays the estimate), not the page, whose transaction and
    statement timeout are as before."""
    entries = realistic(200, seed=6)
    await ingest(client, writer, entries, TENANT)
    f = compile_filter(LogFilter(search="in", start_time="now-1d"), NOW)
    matching = sum("in" in e["message"].lower() for e in entries)
    pool = make_pool(settings, name="count-test", min_size=0, max_size=1)
    await pool.open()
    try:
        guard = QueryGuard(pool, concurrency=1, queue_wait_ms=50, timeout_ms=5_000)
        async with guard.read(TENANT) as conn:
            with psycopg.connect(settings.postgres_conninfo()) as locker:
                locker.execute("LOCK TABLE log_entries IN ACCESS EXCLUSIVE MODE")
                assert await count_within(conn, TENANT, f, 1_001, budget_ms=50) is None
            assert await count_within(conn, TENANT, f, 1_001, budget_ms=50) == matching
            cur = await conn.execute("SHOW statement_timeout")
            assert await cur.fetchone() == ("5s",)
    finally:
        await pool.close()
