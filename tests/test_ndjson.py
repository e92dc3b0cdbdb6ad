"""JSON lines (POST /api/v1/logs/ndjson): records as Fluent Bit and Vector ship them are
stored with their fields mapped by the query parameters, answered as /batch answers;
bad input is problem JSON, with nothing stored and never a 500.

Against a real gateway and writer (tests/live_pipeline.py).
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.gateway.ingest.translated import from_micros, seconds_as_time
from services.gateway.ndjson.mapping import FieldNames, to_entry
from tests.live_pipeline import Pipeline, live_pipeline

NDJSON = "/api/v1/logs/ndjson"


@pytest.fixture(scope="module")
def pipeline(base_settings, tmp_path_factory) -> Iterator[Pipeline]:
    with live_pipeline(base_settings, tmp_path_factory.mktemp("ndjson")) as started:
        yield started


@pytest.fixture
async def http(pipeline) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=pipeline.url, timeout=30) as client:
        yield client


def lines(*records: Any) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def tenant_of(tenant: uuid.UUID, content_type: str = "application/x-ndjson", **extra: str):
    return {"X-Tenant-ID": str(tenant), "Content-Type": content_type, **extra}


async def test_fluent_bit_json_lines_gzip_with_field_names_is_stored(pipeline, http) -> None:
    """Fluent Bit's `http` output, `format json_lines`, `compress gzip`: the message in
    `log`, the time in `date` (epoch seconds, a float), the service in `app`."""
    tenant = uuid.uuid4()
    now = datetime.now(UTC).replace(microsecond=250000)
    body = lines(
        {
            "date": now.timestamp(),
            "log": "GET /health 200",
            "app": "nginx",
            "stream": "stdout",
            "level": "warning",
            "kubernetes": {"pod": "web-1", "namespace": "prod"},
            "trace_id": "abc123",
        },
        {"date": now.timestamp() + 1, "log": "upstream gone", "app": "nginx", "level": "ERR"},
    )
    params = {"_msg_field": "log", "_time_field": "date", "_service_field": "app"}
    response = await http.post(
        NDJSON,
        params=params,
        content=gzip.compress(body),
        headers=tenant_of(tenant, **{"Content-Encoding": "gzip"}),
    )
    assert response.status_code == 202, response.text
    answer = response.json()
    assert (answer["accepted"], answer["rejected"], answer["errors"]) == (2, 0, [])
    first, second = await pipeline.stored(tenant, 2)
    assert [str(first["id"]), str(second["id"])] == answer["ids"]
    assert (first["timestamp"], first["message"], first["service_name"]) == (
        now,
        "GET /health 200",
        "nginx",
    )
    assert (first["level"], first["trace_id"]) == (3, "abc123")
    assert first["metadata"] == {
        "stream": "stdout",
        "kubernetes": {"pod": "web-1", "namespace": "prod"},
    }
    assert (second["timestamp"], second["level"], second["metadata"]) == (
        now + timedelta(seconds=1),
        4,
        None,
    )


async def test_vector_json_array_with_elastic_names_is_stored(pipeline, http) -> None:
    """Vector's `http` sink with `codec: json` sends an array; `@timestamp` and a list of
    message fields (the first present wins)."""
    tenant = uuid.uuid4()
    now = datetime.now(UTC).replace(microsecond=0)
    records = [
        {
            "@timestamp": now.isoformat().replace("+00:00", "Z"),
            "msg": "user signed in",
            "service_name": "auth",
            "severity": "notice",
            "host": "vec-1",
            "source_type": "file",
            "metadata": {"user": "u-9"},
        },
        {"@timestamp": int(now.timestamp() * 1000), "message": "in ms", "service_name": "auth"},
        {"@timestamp": str(nanos := int(now.timestamp()) * 10**9), "message": "in ns"},
    ]
    params = {"_msg_field": "msg,message", "_time_field": "@timestamp", "_level_field": "severity"}
    response = await http.post(
        NDJSON,
        params={**params, "_default_service": "vector", "_default_level": "debug"},
        json=records,
        headers=tenant_of(tenant, "application/json"),
    )
    assert response.status_code == 202, response.text
    rows = await pipeline.stored(tenant, 3)
    by_message = {r["message"]: r for r in rows}
    first = by_message["user signed in"]
    assert (first["timestamp"], first["level"], first["host"]) == (now, 2, "vec-1")
    assert first["metadata"] == {"source_type": "file", "user": "u-9"}
    assert by_message["in ms"]["timestamp"] == now
    assert by_message["in ns"]["timestamp"] == datetime.fromtimestamp(nanos / 10**9, UTC)
    assert (by_message["in ns"]["service_name"], by_message["in ns"]["level"]) == ("vector", 1)


async def test_bad_records_are_named_by_index_and_the_rest_stored(pipeline, http) -> None:
    tenant = uuid.uuid4()
    body = (
        lines({"message": "good one", "service_name": "svc"})
        + b"{not json\n\n"
        + lines(
            [1, 2],
            {"message": "bad level", "level": "LOUD"},
            {"message": 42},
            {"message": "old", "timestamp": "2001-01-01T00:00:00Z"},
        )
        + b'{"message": "bad \xff utf-8"}\n'
        + lines({"message": "good two", "service_name": "svc"})
    )
    response = await http.post(NDJSON, content=body, headers=tenant_of(tenant))
    assert response.status_code == 202, response.text
    answer = response.json()
    assert (answer["accepted"], answer["rejected"]) == (2, 6)
    assert [e["index"] for e in answer["errors"]] == [1, 2, 3, 4, 5, 6]
    assert {e["field"] for e in answer["errors"]} >= {"level", "message", "timestamp"}
    rows = await pipeline.stored(tenant, 2)
    assert [r["message"] for r in rows] == ["good one", "good two"] or sorted(
        r["message"] for r in rows
    ) == ["good one", "good two"]


async def _nothing_then_marker(pipeline: Pipeline, http: httpx.AsyncClient, tenant: uuid.UUID):
    marker = lines({"message": "marker"})
    assert (await http.post(NDJSON, content=marker, headers=tenant_of(tenant))).status_code == 202
    assert [r["message"] for r in await pipeline.stored(tenant, 1)] == ["marker"]


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status and problem["detail"]
    return problem


BAD_BODIES = {
    "every record invalid": (lines({"message": ""}, {"level": "x"}), {}, {}, 422),
    "empty body": (b"\n \n", {}, {}, 400),
    "empty array": (b"[]", {"Content-Type": "application/json"}, {}, 422),
    "malformed JSON array": (b'[{"message": "a"},', {}, {}, 400),
    "truncated gzip": (
        gzip.compress(lines({"message": "a"}))[:-10],
        {"Content-Encoding": "gzip"},
        {},
        400,
    ),
    "gzip bomb": (gzip.compress(b" " * (64 * 1024 * 1024)), {"Content-Encoding": "gzip"}, {}, 413),
    "unknown Content-Encoding": (lines({"message": "a"}), {"Content-Encoding": "zstd"}, {}, 415),
    "Content-Type not JSON lines": (lines({"message": "a"}), {"Content-Type": "text/csv"}, {}, 415),
    "unknown default level": (lines({"message": "a"}), {}, {"_default_level": "LOUD"}, 400),
    "too many records": (lines(*[{"message": "a"}] * 10_001), {}, {}, 413),
}


@pytest.mark.parametrize("case", BAD_BODIES, ids=list(BAD_BODIES))
async def test_bad_bodies_are_problems_and_store_nothing(pipeline, http, case) -> None:
    tenant = uuid.uuid4()
    body, headers, params, status = BAD_BODIES[case]
    response = await http.post(
        NDJSON, content=body, params=params, headers={**tenant_of(tenant), **headers}
    )
    _problem(response, status)
    await _nothing_then_marker(pipeline, http, tenant)


async def test_a_retry_with_the_same_idempotency_key_is_stored_once(pipeline, http) -> None:
    tenant = uuid.uuid4()
    headers = tenant_of(tenant, **{"Idempotency-Key": "nd-1"})
    body = lines({"message": "once", "service_name": "svc"})
    first = await http.post(NDJSON, content=body, headers=headers)
    again = await http.post(NDJSON, content=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    later = lines(
        {"message": "marker", "timestamp": (datetime.now(UTC) + timedelta(seconds=1)).isoformat()}
    )
    assert (await http.post(NDJSON, content=later, headers=tenant_of(tenant))).status_code == 202
    assert [r["message"] for r in await pipeline.stored(tenant, 2)] == ["once", "marker"]


def test_fields_map_in_place_and_the_rest_is_metadata_in_the_order_sent() -> None:
    """The mapping itself (services/gateway/ndjson/mapping.py), on the cases a record's
    own field names make awkward: a `message` that is not the message field, a mapped
    name that is one of the entry's own fields, a `metadata` that is no object."""
    names = FieldNames(message=("log",), time=("date",), service=("host",))
    record = {
        "zeta": 1,
        "message": "not the message",
        "log": "the message",
        "host": "svc-as-host",
        "trace_id": "t-1",
        "alpha": {"b": 2},
        "metadata": [1, 2],
        "level": "warning",
        "date": 1_765_000_000.25,
    }
    assert to_entry(record, names) == {
        "trace_id": "t-1",
        "message": "the message",
        "level": "WARN",
        "service_name": "svc-as-host",
        "timestamp": datetime(2025, 12, 6, 5, 46, 40, 250000, tzinfo=UTC),
        "metadata": {
            "zeta": 1,
            "message": "not the message",
            "alpha": {"b": 2},
            "metadata": [1, 2],
        },
    }
    nested = {"log": "m", "metadata": {"k": "v", "zeta": 3}, "zeta": 1, "user_id": "u"}
    assert to_entry(nested, names) == {
        "user_id": "u",
        "message": "m",
        "level": "INFO",
        "service_name": "unknown_service",
        "metadata": {"zeta": 3, "k": "v"},
    }
    assert "metadata" not in to_entry({"log": "m", "metadata": {}}, names)


@given(st.integers(min_value=-6 * 10**15, max_value=6 * 10**15))
def test_a_float_time_in_whole_microseconds_comes_back_exactly(micros: int) -> None:
    """Between the years 1780 and 2160 (translated.py's `seconds_as_time`, which reads
    the float seconds Fluent Bit sends)."""
    assert seconds_as_time(micros / 1_000_000) == from_micros(micros)
