"""Loki push (POST /loki/api/v1/push): what Promtail and Grafana Alloy send is stored with
its labels mapped; what Loki would refuse is refused in Loki's shape (plain text), with
nothing stored and never a 500.

The main tests run against a real gateway and writer (tests/live_pipeline.py); limits
that need other settings use the app in-process with an in-process writer.
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import snappy
from litestar.testing import AsyncTestClient

from services.gateway.app import create_app
from services.gateway.loki.labels import LabelMapping, map_labels, parse_labels
from services.gateway.loki.translate import stream_of_text
from shared.errors import BadRequest
from tests.keyring import add_key, add_tenant
from tests.live_pipeline import Pipeline, live_pipeline
from tests.loki_client import PROTOBUF, json_body, nanos, protobuf_body, push_request

PUSH = "/loki/api/v1/push"


@pytest.fixture(scope="module")
def loki(base_settings, tmp_path_factory) -> Iterator[Pipeline]:
    with live_pipeline(base_settings, tmp_path_factory.mktemp("loki")) as pipeline:
        yield pipeline


@pytest.fixture
async def http(loki) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=loki.url, timeout=30) as client:
        yield client


def org(tenant: uuid.UUID, content_type: str = PROTOBUF, **extra: str) -> dict[str, str]:
    return {"X-Scope-OrgID": str(tenant), "Content-Type": content_type, **extra}


def _text_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    return response.text


async def _marker_only(loki: Pipeline, http: httpx.AsyncClient, tenant: uuid.UUID) -> None:
    """After refused pushes: a good push for the same tenant is stored, and it alone."""
    now = nanos(datetime.now(UTC))
    body = protobuf_body([('{app="marker"}', [(now, "marker")])])
    assert (await http.post(PUSH, content=body, headers=org(tenant))).status_code == 204
    rows = await loki.stored(tenant, 1)
    assert [r["message"] for r in rows] == ["marker"]


async def test_promtail_protobuf_push_is_stored_with_labels_mapped(loki, http) -> None:
    tenant = uuid.uuid4()
    now = datetime.now(UTC).replace(microsecond=123456)
    t0 = nanos(now) + 789  # nanoseconds below the microsecond are dropped
    body = protobuf_body(
        [
            (
                '{service_name="checkout", level="warn", environment="prod", host="web-1", '
                'region="eu-west", path="C:\\\\logs\\\\a \\"quoted\\""}',
                [
                    (t0, "payment slow", {"trace_id": "4bf92f3577b34da6", "user": "u-1"}),
                    (t0 + 1000, "payment slower", {"detected_level": "error"}),
                ],
            ),
            ('{app="api", job="varlogs", severity="CRITICAL"}', [(t0 + 2000, "disk full")]),
            ('{job="cron"}', [(t0 + 3000, "tick")]),
        ]
    )
    response = await http.post(PUSH, content=body, headers=org(tenant))
    assert response.status_code == 204, response.text
    assert response.content == b""
    rows = await loki.stored(tenant, 4)
    first, second, third, fourth = rows
    assert first["timestamp"] == now
    assert second["timestamp"] == now + timedelta(microseconds=1)
    assert (first["service_name"], first["level"], first["message"]) == (
        "checkout",
        3,
        "payment slow",
    )
    assert (first["environment"], first["host"], first["trace_id"]) == (
        "prod",
        "web-1",
        "4bf92f3577b34da6",
    )
    assert first["metadata"] == {"region": "eu-west", "path": 'C:\\logs\\a "quoted"', "user": "u-1"}
    assert second["level"] == 4  # the entry's detected_level over the stream's level
    assert second["metadata"] == {"region": "eu-west", "path": 'C:\\logs\\a "quoted"'}
    assert (third["service_name"], third["level"], third["metadata"]) == (
        "api",
        5,
        {"job": "varlogs"},
    )
    assert (fourth["service_name"], fourth["level"], fourth["metadata"]) == ("cron", 2, None)


async def test_json_push_gzip_is_stored_with_structured_metadata(loki, http) -> None:
    tenant = uuid.uuid4()
    now = datetime.now(UTC).replace(microsecond=0)
    body = json_body(
        [
            (
                {"service": "billing", "level": "debug", "env": "staging", "team": "payments"},
                [(nanos(now), "invoice made", {"request_id": "req-7", "spanID": "00f067aa"})],
            ),
            ({}, [(nanos(now) + 5_000, "no labels at all", {"host": "h-2", "env": "dev"})]),
        ]
    )
    headers = org(tenant, "application/json", **{"Content-Encoding": "gzip"})
    response = await http.post(
        PUSH, content=gzip.compress(json.dumps(body).encode()), headers=headers
    )
    assert response.status_code == 204, response.text
    first, second = await loki.stored(tenant, 2)
    assert (first["service_name"], first["level"], first["environment"]) == (
        "billing",
        1,
        "staging",
    )
    assert (first["request_id"], first["span_id"]) == ("req-7", "00f067aa")
    assert first["metadata"] == {"team": "payments"}
    assert (second["service_name"], second["level"]) == ("unknown_service", 2)
    assert (second["host"], second["environment"], second["metadata"]) == ("h-2", "dev", None)


async def test_partly_refused_push_stores_the_rest_and_names_the_refused(loki, http) -> None:
    tenant = uuid.uuid4()
    now = nanos(datetime.now(UTC))
    ancient = nanos(datetime(2001, 1, 1, tzinfo=UTC))
    body = protobuf_body(
        [
            ('{app="a"}', [(now, "kept"), (ancient, "too old")]),
            ('{app="b"}', [(now, "   "), (now, "nul \x00 inside")]),
        ]
    )
    text = _text_error(await http.post(PUSH, content=body, headers=org(tenant)), 400)
    assert text.startswith("3 of 4 entries refused"), text
    assert 'entry 1 of stream {app="a"}: timestamp: older than' in text
    assert 'entry 0 of stream {app="b"}: message: must not be empty' in text
    assert "NUL" in text
    rows = await loki.stored(tenant, 1)
    assert [r["message"] for r in rows] == ["kept"]


async def test_a_retried_push_with_its_idempotency_key_is_stored_once(loki, http) -> None:
    tenant = uuid.uuid4()
    body = protobuf_body([('{app="a"}', [(nanos(datetime.now(UTC)), "once")])])
    headers = org(tenant, **{"Idempotency-Key": "push-1"})
    first = await http.post(PUSH, content=body, headers=headers)
    again = await http.post(PUSH, content=body, headers=headers)
    assert (first.status_code, again.status_code) == (204, 204)
    assert again.headers["idempotent-replayed"] == "true"
    await _marker_only_after(loki, http, tenant, ["once"])


async def _marker_only_after(
    loki: Pipeline, http: httpx.AsyncClient, tenant: uuid.UUID, before: list[str]
) -> None:
    now = nanos(datetime.now(UTC) + timedelta(seconds=1))
    body = protobuf_body([('{app="marker"}', [(now, "marker")])])
    assert (await http.post(PUSH, content=body, headers=org(tenant))).status_code == 204
    rows = await loki.stored(tenant, len(before) + 1)
    assert [r["message"] for r in rows] == [*before, "marker"]


def _zip_bomb(size: int) -> bytes:
    return gzip.compress(b"\x00" * size, compresslevel=9)


BAD_PUSHES = {
    "truncated protobuf": (
        lambda: snappy.compress(
            push_request([('{a="b"}', [(1, "x" * 100)])]).SerializeToString()[:-20]
        ),
        {},
        400,
    ),
    "not snappy": (lambda: b"\xff\xff\xff\xff\xff\x00garbage", {}, 400),
    "protobuf not compressed": (
        lambda: push_request([('{a="b"}', [(1, "x")])]).SerializeToString() + b"\xff" * 8,
        {},
        400,
    ),
    "invalid UTF-8 in a line": (
        lambda: snappy.compress(
            push_request([('{a="b"}', [(1, "caf\u00e9")])])
            .SerializeToString()
            .replace("é".encode(), b"\xff\xfe")
        ),
        {},
        400,
    ),
    "labels not in Prometheus form": (
        lambda: protobuf_body([("app=api", [(nanos(datetime.now(UTC)), "x")])]),
        {},
        400,
    ),
    "unknown Content-Encoding": (
        lambda: protobuf_body([('{a="b"}', [(1, "x")])]),
        {"Content-Encoding": "br"},
        415,
    ),
    "gzip header on a body that is not": (
        lambda: protobuf_body([('{a="b"}', [(1, "x")])]),
        {"Content-Encoding": "gzip"},
        400,
    ),
    "truncated gzip": (lambda: _zip_bomb(1000)[:-12], {"Content-Encoding": "gzip"}, 400),
    "gzip bomb": (lambda: _zip_bomb(64 * 1024 * 1024), {"Content-Encoding": "gzip"}, 413),
    "snappy block declaring more than the limit": (
        lambda: snappy.compress(b"\x00" * (11 * 1024 * 1024)),
        {},
        413,
    ),
    "body over MAX_BODY_BYTES": (lambda: b"\x00" * (10 * 1024 * 1024 + 1), {}, 413),
    "JSON that is no push": (
        lambda: b'{"streams": [{"stream": {"a": "b"}, "values": [["soon", "x"]]}]}',
        {"Content-Type": "application/json"},
        400,
    ),
    "JSON not UTF-8": (
        lambda: b'{"streams": [{"stream": {"a": "\xff"}, "values": []}]}',
        {"Content-Type": "application/json"},
        400,
    ),
    "a media type Loki does not take": (lambda: b"a=b", {"Content-Type": "text/csv"}, 415),
}


@pytest.mark.parametrize("case", BAD_PUSHES, ids=list(BAD_PUSHES))
async def test_bad_pushes_get_loki_errors_and_store_nothing(loki, http, case) -> None:
    tenant = uuid.uuid4()
    make, headers, status = BAD_PUSHES[case]
    response = await http.post(PUSH, content=make(), headers={**org(tenant), **headers})
    text = _text_error(response, status)
    assert text.strip() and "Traceback" not in text
    await _marker_only(loki, http, tenant)


async def test_without_a_tenant_header_the_push_is_401_in_text(http) -> None:
    body = protobuf_body([('{a="b"}', [(1, "x")])])
    response = await http.post(PUSH, content=body, headers={"Content-Type": PROTOBUF})
    assert "X-Tenant-ID" in _text_error(response, 401)
    bad = await http.post(PUSH, content=body, headers=org("acme"))  # type: ignore[arg-type]
    assert "X-Scope-OrgID must be a UUID" in _text_error(bad, 400)


async def test_x_tenant_id_wins_over_x_scope_orgid(loki, http) -> None:
    proxy_says, agent_says = uuid.uuid4(), uuid.uuid4()
    body = protobuf_body([('{a="b"}', [(nanos(datetime.now(UTC)), "whose")])])
    headers = {**org(agent_says), "X-Tenant-ID": str(proxy_says)}
    assert (await http.post(PUSH, content=body, headers=headers)).status_code == 204
    assert [r["message"] for r in await loki.stored(proxy_says, 1)] == ["whose"]
    assert loki.count(agent_says) == 0


# -- API keys, limits and backpressure: the app in-process, an in-process writer. -------


async def test_api_key_names_the_tenant_and_x_scope_orgid_may_not_name_another(
    api_client, api_settings, admin_key, writer, db
) -> None:
    mine, theirs = await add_tenant(api_settings), await add_tenant(api_settings)
    key = await add_key(api_settings, mine, "ingest")
    query_only = await add_key(api_settings, mine, "query")
    body = protobuf_body([('{app="k"}', [(nanos(datetime.now(UTC)), "with a key")])])
    bearer = {"Authorization": f"Bearer {key}", "Content-Type": PROTOBUF}
    assert (await api_client.post(PUSH, content=body, headers=bearer)).status_code == 204
    other = await api_client.post(
        PUSH, content=body, headers={**bearer, "X-Scope-OrgID": str(theirs)}
    )
    assert other.status_code == 403 and other.headers["content-type"].startswith("text/plain")
    scoped = {"X-API-Key": query_only, "Content-Type": PROTOBUF}
    refused = await api_client.post(PUSH, content=body, headers=scoped)
    assert refused.status_code == 403 and "ingest" in refused.text
    unknown = await api_client.post(
        PUSH, content=body, headers={**bearer, "Authorization": "Bearer nope"}
    )
    assert unknown.status_code == 401 and unknown.headers["www-authenticate"].startswith("Bearer")
    as_admin = {
        "Authorization": f"Bearer {admin_key}",
        "X-Scope-OrgID": str(theirs),
        "Content-Type": PROTOBUF,
    }
    assert (await api_client.post(PUSH, content=body, headers=as_admin)).status_code == 204
    await writer.drain()
    stored = db.execute("SELECT tenant_id, message FROM log_entries ORDER BY tenant_id").fetchall()
    assert sorted(stored) == sorted([(mine, "with a key"), (theirs, "with a key")])


async def test_backpressure_is_503_with_retry_after_in_text(settings) -> None:
    body = protobuf_body([('{app="a"}', [(nanos(datetime.now(UTC)), "x")])])
    headers = org(uuid.uuid4())
    full = replace(settings, stream_max_backlog=1, stream_shards=1)
    async with AsyncTestClient(app=create_app(full)) as client:  # no writer: nothing drains
        assert (await client.post(PUSH, content=body, headers=headers)).status_code == 204
        response = await client.post(PUSH, content=body, headers=headers)
    assert response.status_code == 503 and response.headers["retry-after"] == "2"
    assert response.headers["content-type"].startswith("text/plain")
    assert "STREAM_MAX_BACKLOG" in response.text


async def test_rate_limit_is_429_with_retry_after_in_text(settings) -> None:
    entries = [(nanos(datetime.now(UTC)), f"line {i}") for i in range(5)]
    body = protobuf_body([('{app="a"}', entries)])
    headers = org(uuid.uuid4())
    slow = replace(settings, tenant_logs_per_second=1, max_batch_entries=5)
    async with AsyncTestClient(app=create_app(slow)) as client:
        assert (await client.post(PUSH, content=body, headers=headers)).status_code == 204
        response = await client.post(PUSH, content=body, headers=headers)
        too_many = await client.post(
            PUSH, content=protobuf_body([('{app="a"}', entries * 2)]), headers=headers
        )
    assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
    assert "ingest_logs_per_second" in response.text
    assert too_many.status_code == 413 and "max_batch_entries" in too_many.text


# -- The label mapping, alone. ------------------------------------------------------------


def test_label_text_is_parsed_with_go_escapes() -> None:
    labels = parse_labels('{a="x", b="tab\\there", c="\\u00e9\\"", d=""}')
    assert labels == {"a": "x", "b": "tab\there", "c": 'é"', "d": ""}
    assert parse_labels("{}") == {}
    for bad in ("", "app", '{app="x"', "{app=x}", '{app="x" b="y"}', '{a="\\q"}'):
        with pytest.raises(BadRequest):
            parse_labels(bad)


def test_service_label_order_is_the_settings_and_unknown_levels_stay_metadata() -> None:
    labels = {"app": "web", "job": "nginx", "level": "verbose2", "severity": "Warning"}
    by_job = map_labels(labels, LabelMapping(service=("job", "app")))
    assert (by_job.service_name, by_job.level) == ("nginx", "WARN")
    assert by_job.metadata == {"app": "web", "level": "verbose2"}
    by_app = map_labels(labels, LabelMapping(service=("service_name", "app", "job")))
    assert by_app.service_name == "web" and by_app.metadata["job"] == "nginx"


def test_long_label_texts_are_mapped_alike_without_the_cache() -> None:
    mapping = LabelMapping(service=("app",))
    long_value = "x" * 2000
    for text in ('{app="web", note="short"}', f'{{app="web", note="{long_value}"}}'):
        assert stream_of_text(text, mapping) == stream_of_text(text, mapping)
        assert stream_of_text(text, mapping).service_name == "web"
    with pytest.raises(BadRequest):
        stream_of_text("{" + "a" * 2000, mapping)
