"""Loki's read API (Grafana's Loki data source): the calls Grafana makes, answered in
Loki's shapes; every LogQL construct returns what the equivalent REST query returns on
the same data; metric queries agree with POST /api/v1/logs/aggregate; what we cannot
answer is a 400 in Loki's shape (plain text), never a 500; and never another tenant's
data, through any Loki endpoint, the WebSocket tail included.

The request fixtures follow Loki's HTTP API documentation and Grafana's data source
(pkg/tsdb/loki: `api.go` builds query_range/query requests with nanosecond start/end,
`step` in ms, `direction`, `limit`; `healthcheck.go` sends `vector(1)+vector(1)` as an
instant query; Explore's volume histogram is
`sum by (level, detected_level) (count_over_time(<selector> [<interval>]))`).
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import msgspec
import psycopg
import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.filters import LogFilter, compile_filter, matches
from shared.model import Level
from tests.conftest import OTHER_TENANT, TENANT
from tests.keyring import add_key, add_tenant
from tests.live_pipeline import Pipeline, live_pipeline
from tests.test_stats import Dataset, ingest_dataset, iso

V1 = "/loki/api/v1"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ns(moment: datetime) -> str:
    delta = moment - EPOCH
    return str((delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000)


def from_ns(text: str) -> datetime:
    return EPOCH + timedelta(microseconds=int(text) // 1000)


def org(tenant: uuid.UUID = TENANT, **extra: str) -> dict[str, str]:
    return {"X-Scope-OrgID": str(tenant), **extra}


async def loki(client: Any, path: str, tenant: uuid.UUID = TENANT, **params: Any) -> Any:
    response = await client.get(V1 + path, params=params, headers=org(tenant))
    assert response.status_code == 200, response.text
    body = response.json()
    return body


def refused(response: Any) -> str:
    """Loki's answer to a query it cannot run: 400, the reason as plain text."""
    assert response.status_code == 400, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    return str(response.text)


def flat(result: list[dict[str, Any]]) -> list[tuple[datetime, str, dict[str, str]]]:
    """Every (time, line, stream labels) of a streams result."""
    return [
        (from_ns(value[0]), value[1], stream["stream"])
        for stream in result
        for value in stream["values"]
    ]


@pytest.fixture
async def data(client, writer) -> Dataset:
    return await ingest_dataset(client, writer)


async def rest_entries(client: Any, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/logs", params=params, headers={"X-Tenant-ID": str(TENANT)})
    assert response.status_code == 200, response.text
    return list(response.json()["entries"])


# -- Grafana's health check and build info --------------------------------------------------


async def test_grafana_health_check_is_answered_as_loki_does(client) -> None:
    # pkg/tsdb/loki/healthcheck.go: instant query, time range 1 s .. 4 s, step 1s.
    body = await loki(
        client, "/query", query="vector(1)+vector(1)", time="4000000000", step="1000ms",
        direction="backward",
    )  # fmt: skip
    assert body["status"] == "success"
    assert body["data"]["resultType"] == "vector"
    # Ten digits are Unix seconds to Loki (loghttp's parseTimestamp), so is it to us.
    assert body["data"]["result"] == [{"metric": {}, "value": [4_000_000_000, "2"]}]
    info = await loki(client, "/status/buildinfo")
    assert info["version"].startswith("3.")


# -- Explore: log lines --------------------------------------------------------------------


async def test_log_queries_return_exactly_what_the_rest_query_returns(client, data) -> None:
    start, end = data.start + timedelta(minutes=7, seconds=3), data.end - timedelta(minutes=11)
    services = sorted({e["service_name"] for e in data.entries[TENANT]})
    first, second = services[0], services[1]
    word = "failed"
    code = next(
        e["metadata"]["error_code"]
        for e in data.entries[TENANT]
        if "error_code" in (e["metadata"] or {})
    )
    trace = next(e["trace_id"] for e in data.entries[TENANT] if start <= e["timestamp"] < end)
    window = [("start_time", iso(start)), ("end_time", iso(end))]
    cases: list[tuple[str, list[tuple[str, str]]]] = [
        (f'{{service_name="{first}"}}', [("service_name", first)]),
        (f'{{service_name=~"{first}|{second}"}}', [("services", f"{first},{second}")]),
        (
            f'{{service_name!="{first}", level=~"error|fatal"}}',
            [("services", ",".join(services[1:])), ("levels", "ERROR,FATAL")],
        ),
        ('{level="warn"} |= "' + word + '"', [("level", "WARN"), ("search", word)]),
        ('{level=~"WARN|error"} |~ "(?i)Failed"', [("levels", "WARN,ERROR"), ("search", word)]),
        (
            f'{{service_name="{first}"}} | json | environment="production"',
            [("service_name", first), ("environment", "production")],
        ),
        (
            f'{{environment="staging"}} | logfmt | error_code="{code}"',
            [("environment", "staging"), ("metadata.error_code", f'"{code}"')],
        ),
        (
            '{host="stats-host"} | duration_ms=800 | drop __error__',
            [("host", "stats-host"), ("metadata.duration_ms", "800")],
        ),
        (f'{{service_name=~".+"}} | trace_id="{trace}"', [("trace_id", trace)]),
    ]
    for logql, params in cases:
        for direction, sort, limit in (("backward", "desc", 100), ("forward", "asc", 37)):
            body = await loki(
                client, "/query_range", query=logql, start=ns(start), end=ns(end),
                limit=str(limit), direction=direction, step="60000ms",
            )  # fmt: skip
            assert body["status"] == "success" and body["data"]["resultType"] == "streams"
            got = flat(body["data"]["result"])
            got.sort(key=lambda g: g[0], reverse=direction == "backward")
            want = await rest_entries(
                client, [*params, *window, ("page_size", str(limit)), ("sort", sort)]
            )
            assert want, logql
            assert [(t, line) for t, line, _ in got] == [
                (datetime.fromisoformat(e["timestamp"]), e["message"]) for e in want
            ], logql
            assert body["data"]["stats"]["summary"]["totalEntriesReturned"] == len(want)


async def test_a_negative_line_filter_matches_the_filter_models_predicate(client, data) -> None:
    start, end = data.start, data.end
    body = await loki(
        client, "/query_range", query='{level="info"} != "fetched" != "Retrying"',
        start=ns(start), end=ns(end), limit="1000",
    )  # fmt: skip
    got = sorted((t, line) for t, line, _ in flat(body["data"]["result"]))
    want = sorted(
        (e["timestamp"], e["message"])
        for e in data.entries[TENANT]
        if e["level"] == int(Level.INFO)
        and "fetched" not in e["message"].lower()
        and "retrying" not in e["message"].lower()
        and start <= e["timestamp"] < end
    )
    assert got == want and want
    # The filter model's Python twin (the live tail's) agrees with its SQL.
    twin = replace(
        compile_filter(LogFilter(level="INFO", start_time=iso(start), end_time=iso(end))),
        exclude_terms=("fetched", "Retrying"),
    )
    by_twin = [e for e in data.entries[TENANT] if matches(TENANT, twin, TENANT, e)]
    assert sorted((e["timestamp"], e["message"]) for e in by_twin) == want


async def test_streams_carry_labels_and_structured_metadata(client, data) -> None:
    start, end = data.start, data.end
    params = {"query": '{level="error"}', "start": ns(start), "end": ns(end), "limit": "20"}
    plain = await loki(client, "/query_range", **params)
    for stream in plain["data"]["result"]:
        labels = stream["stream"]
        assert labels["level"] == "error"
        assert {"service_name", "host", "trace_id", "span_id"} <= labels.keys()
        assert "tenant" not in labels and "tenant_id" not in labels
        assert all(len(v) == 2 for v in stream["values"])
    # Grafana's header: structured metadata apart, as each value's third element.
    response = await client.get(
        V1 + "/query_range", params=params,
        headers=org(**{"X-Loki-Response-Encoding-Flags": "categorize-labels"}),
    )  # fmt: skip
    data_ = response.json()["data"]
    assert data_["encodingFlags"] == ["categorize-labels"]
    for stream in data_["result"]:
        assert set(stream["stream"]) <= {"service_name", "level", "environment", "host", "source"}
        for value in stream["values"]:
            assert value[2]["structuredMetadata"]["trace_id"]


# -- Explore: the volume histogram and metric queries -----------------------------------------


async def aggregate(
    client: Any, start: datetime, end: datetime, interval: str, **filters: Any
) -> Any:
    body = {"start_time": iso(start), "end_time": iso(end), "interval": interval, **filters}
    response = await client.post(
        "/api/v1/logs/aggregate", json=body, headers={"X-Tenant-ID": str(TENANT)}
    )
    assert response.status_code == 200, response.text
    return response.json()


def matrix(body: Any) -> dict[tuple[tuple[str, str], ...], dict[datetime, float]]:
    assert body["status"] == "success" and body["data"]["resultType"] == "matrix", body
    out: dict[tuple[tuple[str, str], ...], dict[datetime, float]] = {}
    for series in body["data"]["result"]:
        key = tuple(sorted(series["metric"].items()))
        out[key] = {EPOCH + timedelta(seconds=t): float(v) for t, v in series["values"]}
    return out


async def test_volume_histogram_agrees_with_the_aggregate_api(client, data) -> None:
    services = sorted({e["service_name"] for e in data.entries[TENANT]})
    for interval, width in (
        ("1m", timedelta(minutes=1)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
    ):
        start = data.start.replace(minute=0, second=0, microsecond=0)
        end = start + timedelta(hours=4)
        for selector, filters in (
            ('{service_name=~".+"}', {}),
            (f'{{service_name="{services[0]}"}}', {"service_name": services[0]}),
            (
                '{level!="debug", environment="production"}',
                {"levels": ["INFO", "WARN", "ERROR", "FATAL"], "environment": "production"},
            ),
        ):
            logql = f"sum by (level, detected_level) (count_over_time({selector} [{interval}]))"
            # Grafana aligns the range to the step; the sample at t counts [t - step, t).
            body = await loki(
                client, "/query_range", query=logql, start=ns(start + width), end=ns(end),
                step=f"{int(width.total_seconds() * 1000)}ms",
            )  # fmt: skip
            got = matrix(body)
            want: dict[tuple[tuple[str, str], ...], dict[datetime, float]] = defaultdict(dict)
            for bucket in (await aggregate(client, start, end, interval, **filters))["buckets"]:
                for level, count in bucket["by_level"].items():
                    if count:
                        key = (("detected_level", level.lower()), ("level", level.lower()))
                        want[key][datetime.fromisoformat(bucket["time"]) + width] = float(count)
            assert got == dict(want), (logql, interval)
            # rate is the same count per second; sum without grouping the total.
            rate = matrix(await loki(
                client, "/query_range", query=f"sum(rate({selector} [{interval}]))",
                start=ns(start + width), end=ns(end), step=f"{int(width.total_seconds())}s",
            ))  # fmt: skip
            totals: Counter[datetime] = Counter()
            for points in want.values():
                for t, v in points.items():
                    totals[t] += v
            assert rate == (
                {(): {t: v / width.total_seconds() for t, v in totals.items()}} if totals else {}
            )


async def test_grouping_by_service_topk_and_instant_queries_agree_with_the_api(
    client, data
) -> None:
    start = data.start.replace(minute=0, second=0, microsecond=0)
    end = start + timedelta(hours=4)
    hour = timedelta(hours=1)
    buckets = (await aggregate(client, start, end, "1h", group_by="service"))["buckets"]
    by_service: dict[tuple[tuple[str, str], ...], dict[datetime, float]] = defaultdict(dict)
    for b in buckets:
        by_service[(("service_name", b["service_name"]),)][
            datetime.fromisoformat(b["time"]) + hour
        ] = float(b["count"])
    query = 'sum by (service_name) (count_over_time({level=~".+"} [1h]))'
    got = matrix(
        await loki(
            client, "/query_range", query=query, start=ns(start + hour), end=ns(end), step="3600"
        )
    )
    assert got == dict(by_service)
    # topk(2, …): at each time, the two largest series' samples.
    top = matrix(
        await loki(
            client,
            "/query_range",
            query=f"topk(2, {query})",
            start=ns(start + hour),
            end=ns(end),
            step="3600",
        )
    )
    per_time: dict[datetime, list[float]] = defaultdict(list)
    for points in by_service.values():
        for t, v in points.items():
            per_time[t].append(v)
    got_per_time: dict[datetime, list[float]] = defaultdict(list)
    for points in top.values():
        for t, v in points.items():
            got_per_time[t].append(v)
    assert {t: sorted(v) for t, v in got_per_time.items()} == {
        t: sorted(v)[-2:] for t, v in per_time.items()
    }
    # count by (level): how many streams each level has (streams are the label sets).
    streams = await loki(
        client,
        "/series",
        **{"match[]": '{service_name=~".+"}', "start": ns(data.start), "end": ns(data.end)},
    )
    assert streams["status"] == "success" and streams["data"]
    # An instant query counts [time - range, time) exactly, as the stats API does.
    t = data.end - timedelta(minutes=13, seconds=7)
    instant = await loki(
        client, "/query", query='sum(count_over_time({service_name=~".+"} [97m]))', time=ns(t)
    )
    window = {"start_time": iso(t - timedelta(minutes=97)), "end_time": iso(t)}
    stats = await client.get(
        "/api/v1/logs/stats", params=window, headers={"X-Tenant-ID": str(TENANT)}
    )
    assert instant["data"]["resultType"] == "vector"
    assert instant["data"]["result"][0]["value"][1] == str(stats.json()["total_count"])
    # Raw path: a line filter (no rollup can answer it) counted against the predicate.
    counted = await loki(
        client,
        "/query",
        query='sum by (level) (count_over_time({service_name=~".+"} |= "failed" [3h]))',
        time=ns(data.end),
    )
    compiled = compile_filter(
        LogFilter(
            search="failed", start_time=iso(data.end - timedelta(hours=3)), end_time=iso(data.end)
        )
    )
    expected = Counter(
        Level(e["level"]).name.lower()
        for e in data.entries[TENANT]
        if matches(TENANT, compiled, TENANT, e)
    )
    assert {r["metric"]["level"]: int(r["value"][1]) for r in counted["data"]["result"]} == dict(
        expected
    )
    # bytes_over_time: the lines' lengths in bytes.
    size = await loki(
        client, "/query", query='sum(bytes_over_time({level="error"} [3h]))', time=ns(data.end)
    )
    since = data.end - timedelta(hours=3)
    want_bytes = sum(
        len(e["message"].encode())
        for e in data.entries[TENANT]
        if e["level"] == int(Level.ERROR) and since <= e["timestamp"] < data.end
    )
    assert size["data"]["result"][0]["value"][1] == str(want_bytes)


# -- The label browser ---------------------------------------------------------------------


async def test_labels_values_and_series_come_from_the_tenants_data(client, data) -> None:
    window = {"start": ns(data.start), "end": ns(data.end + timedelta(seconds=1))}
    names = (await loki(client, "/labels", **window))["data"]
    assert names == sorted(["environment", "host", "level", "service_name", "source"])
    services = (await loki(client, "/label/service_name/values", **window))["data"]
    rest = await client.get(
        "/api/v1/logs/services",
        params={"start_time": iso(data.start), "end_time": iso(data.end + timedelta(seconds=1))},
        headers={"X-Tenant-ID": str(TENANT)},
    )
    assert services == [s["service_name"] for s in rest.json()["services"]]
    levels = (await loki(client, "/label/level/values", **window))["data"]
    assert levels == sorted({Level(e["level"]).name.lower() for e in data.entries[TENANT]})
    assert (await loki(client, "/label/detected_level/values", **window))["data"] == levels
    narrowed = await loki(
        client, "/label/level/values", query=f'{{service_name="{services[0]}"}}', **window
    )
    assert set(narrowed["data"]) <= set(levels)
    assert (await loki(client, "/label/nonexistent/values", **window))["data"] == []
    series = (
        await loki(client, "/series", **{"match[]": f'{{service_name="{services[0]}"}}'}, **window)
    )["data"]
    want = {
        (Level(e["level"]).name.lower(), e["environment"], e["host"], e["source"])
        for e in data.entries[TENANT] if e["service_name"] == services[0]
    }  # fmt: skip
    assert sorted(
        (s["level"], s.get("environment"), s["host"], s["source"]) for s in series
    ) == sorted(want)
    assert all(s["service_name"] == services[0] for s in series)
    stats = await client.get(
        V1 + "/index/stats", params={"query": '{service_name=~".+"}', **window}, headers=org()
    )
    assert stats.json()["entries"] == len(data.entries[TENANT])


# -- Index volume, detected labels and fields --------------------------------------------------


def rollup_bytes(writer: Any, start: datetime, end: datetime) -> dict[str, int]:
    """log_counts' bytes per service over whole minutes: what the writer counted."""
    with psycopg.connect(writer.settings.postgres_conninfo()) as conn:
        rows = conn.execute(
            "SELECT service_name, sum(bytes) FROM log_counts WHERE tenant_id = %s "
            "AND minute >= %s AND minute < %s GROUP BY 1",
            (TENANT, start, end),
        ).fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


def minutes(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    lo = start.replace(second=0, microsecond=0)
    hi = end.replace(second=0, microsecond=0)
    return lo, hi if hi == end else hi + timedelta(minutes=1)


async def test_index_volume_is_the_rollups_bytes_in_lokis_vector(client, writer, data) -> None:
    start, end = data.start, data.end + timedelta(seconds=1)
    window = {"start": ns(start), "end": ns(end)}
    rest = await client.get(
        "/api/v1/logs/services",
        params={"start_time": iso(start), "end_time": iso(end)},
        headers={"X-Tenant-ID": str(TENANT)},
    )
    services = [s["service_name"] for s in rest.json()["services"]]
    # Grafana's service selection: every service, its bytes, largest first.
    body = await loki(client, "/index/volume", query='{service_name=~".+"}', limit="1000", **window)
    assert body["status"] == "success" and body["data"]["resultType"] == "vector"
    result = body["data"]["result"]
    assert all(set(r) == {"metric", "value"} for r in result)
    assert all(r["value"][0] == end.timestamp() for r in result)  # at `end`, in seconds
    assert all(isinstance(r["value"][1], str) for r in result)
    got = {r["metric"]["service_name"]: int(r["value"][1]) for r in result}
    assert sorted(got) == sorted(services)
    assert [int(r["value"][1]) for r in result] == sorted(got.values(), reverse=True)
    assert got == rollup_bytes(writer, *minutes(start, end))
    # `{}` (match all), summed into every label set: the tenant's stored bytes.
    everything = await loki(client, "/index/volume", query="{}", limit="1000", **window)
    assert everything["data"]["result"]
    assert all(set(r["metric"]) >= {"service_name", "level"} for r in everything["data"]["result"])
    storage = await client.get("/api/v1/logs/storage", headers={"X-Tenant-ID": str(TENANT)})
    total = sum(int(r["value"][1]) for r in everything["data"]["result"])
    assert total == storage.json()["bytes"] == sum(got.values())
    # limit keeps the largest; targetLabels aggregate into those labels only.
    top = await loki(client, "/index/volume", query='{service_name=~".+"}', limit="2", **window)
    assert [r["metric"]["service_name"] for r in top["data"]["result"]] == [
        r["metric"]["service_name"] for r in result[:2]
    ]
    by_level = await loki(
        client, "/index/volume", query=f'{{service_name="{services[0]}"}}',
        targetLabels="level", **window,
    )  # fmt: skip
    levels = {r["metric"]["level"]: int(r["value"][1]) for r in by_level["data"]["result"]}
    assert all(set(r["metric"]) == {"level"} for r in by_level["data"]["result"])
    assert sum(levels.values()) == got[services[0]]
    assert set(levels) == {
        Level(e["level"]).name.lower()
        for e in data.entries[TENANT]
        if e["service_name"] == services[0]
    }
    # aggregateBy=labels: one series per label name, value "".
    labels = await loki(
        client, "/index/volume", query='{service_name=~".+", level=~".+"}',
        aggregateBy="labels", **window,
    )  # fmt: skip
    assert {tuple(r["metric"].items()) for r in labels["data"]["result"]} == {
        (("service_name", ""),), (("level", ""),),
    }  # fmt: skip
    assert {int(r["value"][1]) for r in labels["data"]["result"]} == {total}
    # A target label no entry has selects nothing (Loki adds `label=~".+"`).
    none = await loki(client, "/index/volume", query="{}", targetLabels="namespace", **window)
    assert none["data"]["result"] == []
    # POST, form-encoded, as Grafana may send it.
    posted = await client.post(
        V1 + "/index/volume",
        content=urlencode({"query": '{service_name=~".+"}', "limit": "1000", **window}),
        headers=org(**{"Content-Type": "application/x-www-form-urlencoded"}),
    )
    assert posted.status_code == 200 and posted.json()["data"]["result"] == result


async def test_index_volume_range_buckets_agree_with_the_aggregate_api(client, data) -> None:
    start = data.start.replace(minute=0, second=0, microsecond=0)
    end = start + timedelta(hours=4)
    window = {"start": ns(start), "end": ns(end)}
    body = await loki(
        client, "/index/volume_range", query='{service_name=~".+"}', step="1h", limit="1000",
        **window,
    )  # fmt: skip
    assert body["data"]["resultType"] == "matrix"
    got: dict[str, dict[float, int]] = {}
    for series in body["data"]["result"]:
        assert set(series) == {"metric", "values"}
        got[series["metric"]["service_name"]] = {t: int(v) for t, v in series["values"]}
    # One sample per hour with entries, 1 ms before the hour ends (Loki's ForInterval),
    # the last at `end`.
    want: dict[str, set[float]] = defaultdict(set)
    for bucket in (await aggregate(client, start, end, "1h", group_by="service"))["buckets"]:
        if bucket["count"]:
            bucket_end = datetime.fromisoformat(bucket["time"]) + timedelta(hours=1)
            at = end if bucket_end >= end else bucket_end - timedelta(milliseconds=1)
            want[bucket["service_name"]].add(round(at.timestamp(), 3))
    assert {s: set(points) for s, points in got.items()} == dict(want)
    # The buckets add up to the instant volume over the same window.
    instant = await loki(
        client, "/index/volume", query='{service_name=~".+"}', limit="1000", **window
    )
    assert {r["metric"]["service_name"]: int(r["value"][1]) for r in instant["data"]["result"]} == {
        s: sum(points.values()) for s, points in got.items()
    }
    # A single bucket is a vector, as Loki answers it (an hour: the 4 hours may cross
    # midnight, and then hold two day buckets).
    hour = {"start": ns(start), "end": ns(start + timedelta(hours=1))}
    one = await loki(client, "/index/volume_range", query='{service_name=~".+"}', step="1d", **hour)
    assert one["data"]["resultType"] == "vector"


async def test_volume_refusals_are_400_in_lokis_shape(client) -> None:
    for params in (
        {"query": '{host="web-1"}'},
        {"query": '{service_name="a"} |= "x"'},
        {"query": '{service_name="a"}', "aggregateBy": "streams"},
        {"query": '{service_name="a"}', "targetLabels": "source"},
        {"query": '{service_name="a"}', "limit": "-1"},
        {"query": ""},
        {"query": "{"},
    ):
        for path in ("/index/volume", "/index/volume_range"):
            assert refused(await client.get(V1 + path, params=params, headers=org())), params
    response = await client.get(
        V1 + "/index/volume_range",
        params={"query": "{}", "start": "0", "end": "86400", "step": "1s"},
        headers=org(),
    )
    assert "11,000 points" in refused(response)


async def test_detected_labels_and_fields_come_from_the_tenants_data(client, data) -> None:
    start, end = data.start, data.end + timedelta(seconds=1)
    window = {"start": ns(start), "end": ns(end)}
    body = await loki(client, "/detected_labels", query='{service_name=~".+"}', **window)
    assert set(body) == {"detectedLabels"}
    found = {d["label"]: d["cardinality"] for d in body["detectedLabels"]}
    assert all(set(d) == {"label", "cardinality"} for d in body["detectedLabels"])
    rest = await client.get(
        "/api/v1/logs/stats",
        params={"start_time": iso(start), "end_time": iso(end)},
        headers={"X-Tenant-ID": str(TENANT)},
    )
    stats = rest.json()
    assert found["service_name"] == len(stats["by_service"])
    assert found["level"] == len([n for n in stats["by_level"].values() if n])
    assert found["environment"] == len({e["environment"] for e in data.entries[TENANT]} - {None})
    assert (await loki(client, "/detected_labels", **window))["detectedLabels"] == body[
        "detectedLabels"
    ]
    # Fields: the structured metadata of the newest `line_limit` entries.
    service = sorted(stats["by_service"])[0]
    fields = await loki(
        client, "/detected_fields", query=f'{{service_name="{service}"}}', line_limit="40",
        **window,
    )  # fmt: skip
    newest = await rest_entries(
        client,
        [("service_name", service), ("start_time", iso(start)), ("end_time", iso(end)),
         ("page_size", "40")],
    )  # fmt: skip
    seen: dict[str, set[str]] = defaultdict(set)
    for e in newest:
        for name in ("trace_id", "span_id", "request_id", "user_id"):
            if e.get(name):
                seen[name].add(e[name])
        for key, value in (e.get("metadata") or {}).items():
            seen[key].add(value if isinstance(value, str) else msgspec.json.encode(value).decode())
    assert fields["limit"] == 1000
    assert {f["label"]: f["cardinality"] for f in fields["fields"]} == {
        k: len(v) for k, v in seen.items()
    }
    for f in fields["fields"]:
        assert set(f) == {"label", "type", "cardinality", "parsers"} and f["parsers"] is None
        assert f["type"] in {"string", "int", "float", "boolean", "duration", "bytes"}
    assert {f["label"]: f["type"] for f in fields["fields"]}["trace_id"] == "string"
    capped = await loki(
        client, "/detected_fields", query=f'{{service_name="{service}"}}', limit="2", **window
    )
    assert len(capped["fields"]) == 2 and capped["limit"] == 2
    nothing = await loki(client, "/detected_fields", query='{service_name="none"}', **window)
    assert nothing == {}
    for params in ({}, {"query": "{"}, {"query": '{service_name="a"}', "line_limit": "5000"}):
        assert refused(await client.get(V1 + "/detected_fields", params=params, headers=org()))


def test_detected_field_types_are_guessed_as_lokis_determine_type() -> None:
    from services.gateway.loki.detected import field_type

    for value, kind in (
        ("42", "int"), ("-7", "int"), ("3.5", "float"), ("1e3", "float"), ("true", "boolean"),
        ("F", "boolean"), ("150ms", "duration"), ("1h30m", "duration"), ("10KB", "bytes"),
        ("5 MiB", "bytes"), ("GET", "string"), ("4bf92f3577b34da6", "string"), ("", "string"),
    ):  # fmt: skip
        assert field_type(value) == kind, value


# -- Refusals: Loki's shape, never a 500 -------------------------------------------------------

UNSUPPORTED = [
    "",
    "{",
    "{}",
    '{service_name=~".*"}',
    '{service_name="a"} |= "x" or "y"',
    '{service_name="a"} | line_format "{{.x}}"',
    '{service_name="a"} | status >= 500',
    '{service_name=~"(a+)+b"}',
    '{service_name="a"} |~ "a.*b[0-9]"',
    '{environment!="prod", service_name="a"}',
    '{tenant="x", service_name="a"}',
    '{trace_id="x"}',
    'avg_over_time({service_name="a"} | unwrap x [5m])',
    'max by (level) (count_over_time({service_name="a"}[5m]))',
    'sum by (job) (count_over_time({service_name="a"}[5m]))',
    'count_over_time({service_name="a"}[5m] offset 1h)',
    'rate({service_name="a"}[0s])',
    '{service_name="a"} | json foo="bar"',
]


async def test_unsupported_and_malformed_queries_are_400_in_lokis_shape(client) -> None:
    for query in UNSUPPORTED:
        response = await client.get(V1 + "/query_range", params={"query": query}, headers=org())
        assert refused(response), query
    response = await client.get(
        V1 + "/query", params={"query": '{service_name="a"}'}, headers=org()
    )
    assert "instant query" in refused(response)
    response = await client.get(
        V1 + "/query_range",
        params={"query": '{service_name="a"}', "limit": "100000"},
        headers=org(),
    )
    assert "max entries limit" in refused(response)
    response = await client.get(
        V1 + "/query_range",
        params={"query": '{service_name="a"}', "start": "yesterday"},
        headers=org(),
    )
    assert "start" in refused(response)


# -- Tenancy ---------------------------------------------------------------------------------


async def test_no_loki_endpoint_shows_another_tenants_data(client, data) -> None:
    window = {"start": ns(data.start), "end": ns(data.end + timedelta(seconds=1))}
    others = {e["service_name"] for e in data.entries[OTHER_TENANT]}
    probes = [
        ("/query_range", {"query": '{service_name=~"other-.+"}', **window}),
        (
            "/query_range",
            {
                "query": 'sum by (service_name) (count_over_time({service_name=~".+"}[1h]))',
                **window,
            },
        ),
        (
            "/query",
            {
                "query": 'sum by (service_name) (count_over_time({service_name=~".+"}[4h]))',
                "time": window["end"],
            },
        ),
        ("/labels", window),
        ("/label/service_name/values", window),
        ("/series", {"match[]": '{service_name=~".+"}', **window}),
        ("/index/volume", {"query": "{}", **window}),
        ("/index/volume_range", {"query": '{service_name=~".+"}', "step": "1h", **window}),
        ("/detected_labels", window),
        ("/detected_fields", {"query": '{service_name=~".+"}', **window}),
    ]
    for path, params in probes:
        response = await client.get(V1 + path, params=params, headers=org(TENANT))
        assert response.status_code == 200, response.text
        assert not [s for s in others if s in response.text], path
    # Loki's multi-tenant form is refused; so is a tenant header that is not a UUID.
    for header in (f"{TENANT}|{OTHER_TENANT}", "not-a-tenant"):
        response = await client.get(V1 + "/labels", headers={"X-Scope-OrgID": header})
        assert response.status_code == 400 and response.headers["content-type"].startswith(
            "text/plain"
        )


async def test_api_key_as_basic_auth_password_reads_only_its_tenant(
    api_client, api_settings
) -> None:
    tenant = await add_tenant(api_settings)
    key = await add_key(api_settings, tenant, "query")
    basic = base64.b64encode(f"grafana:{key}".encode()).decode()
    response = await api_client.get(V1 + "/labels", headers={"Authorization": f"Basic {basic}"})
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "success", "data": []}
    # Naming another tenant with a non-admin key: 403, as everywhere.
    response = await api_client.get(
        V1 + "/labels",
        headers={"Authorization": f"Basic {basic}", "X-Scope-OrgID": str(uuid.uuid4())},
    )
    assert response.status_code == 403
    wrong = base64.b64encode(b"grafana:not-a-key").decode()
    response = await api_client.get(V1 + "/labels", headers={"Authorization": f"Basic {wrong}"})
    assert response.status_code == 401 and response.headers["content-type"].startswith("text/plain")


# -- Live tail over WebSocket (real gateway and writer processes) -----------------------------


@pytest.fixture(scope="module")
def live(base_settings, tmp_path_factory) -> Iterator[Pipeline]:
    with live_pipeline(base_settings, tmp_path_factory.mktemp("loki-tail")) as pipeline:
        yield pipeline


async def _tail_lines(socket: Any, count: int) -> list[tuple[dict[str, str], str]]:
    """The next `count` lines the tail sends (stream labels, line)."""
    lines: list[tuple[dict[str, str], str]] = []
    while len(lines) < count:
        message = msgspec.json.decode(await asyncio.wait_for(socket.recv(), 30))
        assert "streams" in message, message
        for stream in message["streams"]:
            lines += [(stream["stream"], value[1]) for value in stream["values"]]
    return lines


async def test_websocket_tail_streams_only_the_callers_matching_logs(live) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    ws_url = live.url.replace("http://", "ws://") + V1 + "/tail"
    query = {"query": '{service_name="tail-svc", level=~"error|warn"} != "skip"'}
    url = f"{ws_url}?{urlencode(query)}"
    async with (
        httpx.AsyncClient(base_url=live.url, timeout=30) as http,
        websockets.connect(url, additional_headers=org(a)) as tail_a,
        websockets.connect(url, additional_headers=org(b)) as tail_b,
    ):
        for tenant, tag in ((a, "a"), (b, "b")):
            entries = [
                {"service_name": "tail-svc", "level": level, "message": f"{tag} {i} {word}"}
                for i, (level, word) in enumerate(
                    [("ERROR", "one"), ("INFO", "two"), ("WARN", "skip"), ("WARN", "three")]
                )
            ]
            response = await http.post(
                "/api/v1/logs/batch",
                json={"entries": entries},
                headers={"X-Tenant-ID": str(tenant)},
            )
            assert response.status_code == 202, response.text
        got_a = await _tail_lines(tail_a, 2)
        got_b = await _tail_lines(tail_b, 2)
    assert [line for _, line in got_a] == ["a 0 one", "a 3 three"]
    assert [line for _, line in got_b] == ["b 0 one", "b 3 three"]
    assert got_a[0][0]["service_name"] == "tail-svc" and got_a[0][0]["level"] == "error"
    # A reconnect first replays the last lines since `start` (oldest first), as Loki does.
    since = {
        "query": '{service_name="tail-svc"}',
        "limit": "2",
        "start": ns(datetime.now(UTC) - timedelta(minutes=5)),
    }
    async with websockets.connect(
        f"{ws_url}?{urlencode(since)}", additional_headers=org(a)
    ) as again:
        assert [line for _, line in await _tail_lines(again, 2)] == ["a 2 skip", "a 3 three"]


async def test_a_websocket_tail_that_cannot_run_is_refused_before_it_opens(live) -> None:
    ws_url = live.url.replace("http://", "ws://") + V1 + "/tail"
    for query, headers in (
        ('{service_name="x"}', {}),  # no tenant
        ('{service_name="x"}', {"X-Scope-OrgID": f"{TENANT}|{OTHER_TENANT}"}),
        ('sum(count_over_time({service_name="x"}[1m]))', org()),
        ("{", org()),
    ):
        with pytest.raises(websockets.exceptions.InvalidStatus):
            async with websockets.connect(
                f"{ws_url}?{urlencode({'query': query})}", additional_headers=headers
            ):
                pass


_FRAGMENTS = st.sampled_from(
    [
        "{", "}", "(", ")", "[", "]", ",", "|", "|=", "!=", "|~", "!~", "=~", "=", '"x"',
        '".+"', '"(a+)+b"', "`y`", "5m", "1h", "sum", "count", "by", "without", "topk",
        "bottomk", "count_over_time", "rate", "bytes_rate", "vector", "json", "drop",
        "__error__", "service_name", "level", "host", "job", "3", " ", "+", "1e308",
    ]
)  # fmt: skip


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    query=st.one_of(st.text(max_size=80), st.lists(_FRAGMENTS, max_size=20).map("".join)),
    path=st.sampled_from(["/query_range", "/query", "/labels", "/series", "/index/stats"]),
    extra=st.dictionaries(
        st.sampled_from(["start", "end", "step", "limit", "direction", "time", "since"]),
        st.one_of(st.text(max_size=24), st.integers().map(str)),
        max_size=3,
    ),
)
async def test_hostile_input_is_200_or_a_400_in_lokis_shape_never_a_500(
    client, query: str, path: str, extra: dict[str, str]
) -> None:
    params = {"query": query, "match[]": query, **extra}
    response = await client.get(V1 + path, params=params, headers=org())
    assert response.status_code in (200, 400), (response.status_code, response.text)
    if response.status_code == 400:
        assert response.headers["content-type"].startswith("text/plain")
