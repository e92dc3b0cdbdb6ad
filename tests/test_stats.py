"""Stats, aggregate, services and storage: exact counts against a Python reference, the
same from rollups and from raw rows, and never a number of another tenant."""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import psycopg
import pytest
from litestar.testing import AsyncTestClient

from services.gateway.admin.tenancy import SYSTEM_TENANT
from services.gateway.app import create_app
from shared import rollups
from shared.compaction import SETTLE, compact_step
from shared.filters import LogFilter, compile_filter, matches
from shared.model import LEVEL_NAMES, Level
from tests.conftest import OTHER_TENANT, TENANT, tenant_headers
from tests.datagen import load_gen_logs
from tests.keyring import add_key, add_tenant, key_headers

RAW_HOST = "stats-host"  # every TENANT entry has it: host=RAW_HOST forces the raw path


@dataclass
class Dataset:
    """What was ingested, as stored (level as its number, timestamps as datetimes)."""

    start: datetime
    end: datetime
    entries: dict[uuid.UUID, list[dict[str, Any]]]

    def expected(self, tenant: uuid.UUID, f: LogFilter) -> list[dict[str, Any]]:
        compiled = compile_filter(f, now=datetime.now(UTC))
        return [e for e in self.entries[tenant] if matches(tenant, compiled, tenant, e)]


def _generated(n: int, seed: int, end: datetime, hours: float) -> list[dict[str, Any]]:
    gen = load_gen_logs()
    return list(gen.generate(n, seed=seed, days=hours / 24, tenants=1, end=end))


def set_watermark(conninfo: str, at: datetime) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("UPDATE rollup_watermark SET compacted_until = %s", (at,))


async def ingest_dataset(client, writer, *, per_tenant: int = 1500) -> Dataset:
    """Two tenants, 3 hours of realistic entries two days ago (a closed range), with
    timestamps off the minute. OTHER_TENANT's services are all named other-*.

    The rollup watermark is put 1 h 30 min into the range before the entries are stored
    and compacted to 2 h 30 min after (shared/compaction.py): the hourly and daily cells
    of the first part come from the writer (entries arriving late), of the middle from
    compaction, and the last 30 minutes are in log_counts only. Every count in these
    tests crosses all three."""
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=2)
    end += timedelta(seconds=17.5)
    start = end - timedelta(hours=3)
    conninfo = writer.settings.postgres_conninfo()
    set_watermark(conninfo, (start + timedelta(minutes=90)).replace(second=0, microsecond=0))
    stored: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for tenant, seed in ((TENANT, 11), (OTHER_TENANT, 12)):
        entries = _generated(per_tenant, seed, end, hours=3)
        for e in entries:
            del e["tenant_id"]
            if tenant == OTHER_TENANT:
                e["service_name"] = "other-" + e["service_name"]
            else:
                e["host"] = RAW_HOST
        for i in range(0, len(entries), 500):
            response = await client.post(
                "/api/v1/logs/batch",
                json={"entries": entries[i : i + 500]},
                headers=tenant_headers(tenant),
            )
            assert response.status_code == 202, response.text
        stored[tenant] = [
            {
                **e,
                "level": int(Level[e["level"]]),
                "timestamp": datetime.fromisoformat(e["timestamp"]),
            }
            for e in entries
        ]
    await writer.drain()
    with psycopg.connect(conninfo) as conn:
        compact_step(conn, now=start + timedelta(minutes=150) + SETTLE)
    return Dataset(start=start, end=end, entries=stored)


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def query_params(f: LogFilter) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    for name in LogFilter.__struct_fields__:
        value = getattr(f, name)
        if value is None:
            continue
        if isinstance(value, list):
            params += [(name, v) for v in value]
        else:
            params.append((name, iso(value) if isinstance(value, datetime) else str(value)))
    return params


def windows(data: Dataset) -> list[tuple[datetime, datetime]]:
    s = data.start
    return [
        (s - timedelta(hours=1), data.end + timedelta(hours=1)),  # everything
        (s + timedelta(minutes=17, seconds=13.5), s + timedelta(hours=2, minutes=41, seconds=7)),
        (s + timedelta(minutes=30, seconds=10), s + timedelta(minutes=30, seconds=50)),
        (s + timedelta(minutes=59, seconds=30), s + timedelta(hours=1, minutes=2, seconds=1)),
        (s + timedelta(hours=1), s + timedelta(hours=2)),  # aligned to hours
    ]


FILTERS = [
    {},
    {"service_name": "payment"},
    {"min_level": "WARN"},
    {"levels": ["ERROR", "FATAL"]},
    {"environment": "production"},
    {"services": ["auth-service", "billing"], "min_level": "INFO"},
]


def level_counts(entries: list[dict[str, Any]]) -> dict[str, int]:
    counts = Counter(Level(e["level"]).name for e in entries)
    return {name: counts.get(name, 0) for name in LEVEL_NAMES}


async def get_stats(client, f: LogFilter, tenant: uuid.UUID = TENANT) -> dict[str, Any]:
    response = await client.get(
        "/api/v1/logs/stats", params=query_params(f), headers=tenant_headers(tenant)
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def check_stats(body: dict[str, Any], expected: list[dict[str, Any]]) -> None:
    assert body["total_count"] == len(expected)
    assert body["by_level"] == level_counts(expected)
    assert body["by_service"] == dict(Counter(e["service_name"] for e in expected))
    if expected:
        assert datetime.fromisoformat(body["first_timestamp"]) == min(
            e["timestamp"] for e in expected
        )
        assert datetime.fromisoformat(body["last_timestamp"]) == max(
            e["timestamp"] for e in expected
        )
    else:
        assert body["first_timestamp"] is None and body["last_timestamp"] is None


async def test_stats_are_exact_from_rollups_and_from_raw_rows(client, writer) -> None:
    data = await ingest_dataset(client, writer)
    for start, end in windows(data):
        for terms in FILTERS:
            f = LogFilter(start_time=iso(start), end_time=iso(end), **terms)
            expected = data.expected(TENANT, f)
            rolled = await get_stats(client, f)
            assert rolled["source"] == "rollup"
            check_stats(rolled, expected)
            # host names no rollup dimension: the same question answered from raw rows.
            raw = await get_stats(client, msgspec.structs.replace(f, host=RAW_HOST))
            assert raw["source"] == "raw"
            assert raw == {**rolled, "source": "raw"}


async def test_stats_with_search_count_raw_rows(client, writer) -> None:
    data = await ingest_dataset(client, writer, per_tenant=600)
    f = LogFilter(
        start_time=iso(data.start), end_time=iso(data.end), search="failed", min_level="ERROR"
    )
    body = await get_stats(client, f)
    assert body["source"] == "raw"
    check_stats(body, data.expected(TENANT, f))
    assert body["total_count"] > 0


async def test_stats_default_window_is_the_last_24_hours(client, writer) -> None:
    now = datetime.now(UTC)
    entries = [
        {"service_name": "svc", "level": "INFO", "message": f"m{i}", "timestamp": iso(ts)}
        for i, ts in enumerate([now - timedelta(hours=30), now - timedelta(hours=2), now])
    ]
    response = await client.post(
        "/api/v1/logs/batch", json={"entries": entries}, headers=tenant_headers()
    )
    assert response.status_code == 202
    await writer.drain()
    body = await get_stats(client, LogFilter())
    assert body["total_count"] == 2
    assert body["end_time"] is None
    start = datetime.fromisoformat(body["start_time"])
    assert (
        timedelta(hours=23, minutes=59) < datetime.now(UTC) - start < timedelta(hours=24, minutes=1)
    )


async def test_stats_of_an_empty_range_are_zero(client, writer) -> None:
    data = await ingest_dataset(client, writer, per_tenant=200)
    at = iso(data.start + timedelta(minutes=10))
    body = await get_stats(client, LogFilter(start_time=at, end_time=at))
    check_stats(body, [])
    assert body["by_level"] == dict.fromkeys(LEVEL_NAMES, 0)


def reference_buckets(
    entries: list[dict[str, Any]], interval: timedelta, by_service: bool
) -> dict[tuple[Any, ...], dict[str, int]]:
    origin = datetime(2000, 1, 1, tzinfo=UTC)
    cells: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for e in entries:
        ts = e["timestamp"]
        bucket = ts - (ts - origin) % interval
        key = (bucket, e["service_name"]) if by_service else (bucket,)
        cells.setdefault(key, []).append(e)
    return {key: level_counts(group) for key, group in cells.items()}


async def post_aggregate(client, body: dict[str, Any], tenant: uuid.UUID = TENANT):
    return await client.post("/api/v1/logs/aggregate", json=body, headers=tenant_headers(tenant))


@pytest.mark.parametrize(
    ("interval", "step"),
    [("1m", timedelta(minutes=1)), ("15m", timedelta(minutes=15)), ("1h", timedelta(hours=1))],
)
async def test_aggregate_buckets_match_a_python_histogram(client, writer, interval, step) -> None:
    data = await ingest_dataset(client, writer, per_tenant=800)
    start, end = windows(data)[1]
    for terms in ({}, {"min_level": "WARN"}, {"service_name": "payment"}):
        f = LogFilter(start_time=iso(start), end_time=iso(end), **terms)
        expected = reference_buckets(data.expected(TENANT, f), step, by_service=False)
        answers = {}
        for extra in ({}, {"host": RAW_HOST}):
            response = await post_aggregate(
                client, {**query_dict(f), **extra, "interval": interval}
            )
            assert response.status_code == 200, response.text
            body = response.json()
            answers[body["source"]] = body["buckets"]
            got = {
                (datetime.fromisoformat(b["time"]),): b["by_level"]
                for b in body["buckets"]
                if b["count"]
            }
            assert got == expected
            assert all(b["count"] == sum(b["by_level"].values()) for b in body["buckets"])
            times = [datetime.fromisoformat(b["time"]) for b in body["buckets"]]
            # Dense: every bucket from the start's to the end's, empty ones included.
            assert times[0] <= start < times[0] + step
            assert times[-1] < end <= times[-1] + step
            assert all(b - a == step for a, b in itertools.pairwise(times))
        assert answers["rollup"] == answers["raw"]


def query_dict(f: LogFilter) -> dict[str, Any]:
    return {name: getattr(f, name) for name in LogFilter.__struct_fields__ if getattr(f, name)}


async def test_aggregate_by_service_lists_each_service_bucket(client, writer) -> None:
    data = await ingest_dataset(client, writer, per_tenant=800)
    start, end = windows(data)[0]
    f = LogFilter(start_time=iso(start), end_time=iso(end), min_level="INFO")
    response = await post_aggregate(
        client, {**query_dict(f), "interval": "1h", "group_by": "service"}
    )
    assert response.status_code == 200, response.text
    got = {
        (datetime.fromisoformat(b["time"]), b["service_name"]): b["by_level"]
        for b in response.json()["buckets"]
    }
    assert got == reference_buckets(data.expected(TENANT, f), timedelta(hours=1), by_service=True)


@pytest.mark.parametrize(
    "body",
    [{"interval": "2m"}, {"interval": "1m", "start_time": "now-30d"}, {"group_by": "host"}],
)
async def test_aggregate_refuses_bad_interval_grouping_or_too_many_buckets(client, body) -> None:
    response = await post_aggregate(client, body)
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_services_list_counts_and_last_seen_minute(client, writer) -> None:
    data = await ingest_dataset(client, writer, per_tenant=800)
    response = await client.get("/api/v1/logs/services", headers=tenant_headers())
    assert response.status_code == 200, response.text
    body = response.json()
    expected: dict[str, list[dict[str, Any]]] = {}
    for e in data.entries[TENANT]:
        expected.setdefault(e["service_name"], []).append(e)
    assert [s["service_name"] for s in body["services"]] == sorted(expected)
    for s in body["services"]:
        group = expected[s["service_name"]]
        assert s["count"] == len(group)
        newest = max(e["timestamp"] for e in group)
        assert datetime.fromisoformat(s["last_seen"]) == newest.replace(second=0, microsecond=0)
    # A window ending mid-way, and a filter on level.
    mid = iso(data.start + timedelta(hours=1, minutes=30, seconds=5))
    f = LogFilter(end_time=mid, start_time=iso(data.start), min_level="ERROR")
    response = await client.get(
        "/api/v1/logs/services", params=query_params(f), headers=tenant_headers()
    )
    counted = Counter(e["service_name"] for e in data.expected(TENANT, f))
    assert {s["service_name"]: s["count"] for s in response.json()["services"]} == counted


async def test_storage_reports_the_tenants_rows_bytes_and_quota(client, writer, db) -> None:
    await ingest_dataset(client, writer, per_tenant=300)
    response = await client.get("/api/v1/logs/storage", headers=tenant_headers())
    assert response.status_code == 200, response.text
    body = response.json()
    rows, size = db.execute(
        "SELECT sum(count)::bigint, sum(bytes)::bigint FROM log_counts WHERE tenant_id = %s",
        (TENANT,),
    ).fetchone()
    assert (body["rows"], body["bytes"]) == (rows, size) == (300, size)
    assert body["quota_bytes"] == 50 * 1024**3
    assert body["quota_used"] == pytest.approx(size / (50 * 1024**3), rel=1e-3)
    # Without a policy's max_size_gb, LOG_MAX_SIZE_GB holds all tenants together.
    assert body["quota_scope"] == "all_tenants"
    assert "all_tenants" not in body or body["all_tenants"] is None
    db.execute(
        "INSERT INTO log_retention_policies (id, tenant_id, retention_days, max_size_gb) "
        "VALUES (%s, %s, 7, 2)",
        (uuid.uuid4(), TENANT),
    )
    response = await client.get(
        "/api/v1/logs/storage", headers={**tenant_headers(), "Cache-Control": "no-cache"}
    )
    assert (response.json()["quota_bytes"], response.json()["quota_scope"]) == (
        2 * 1024**3,
        "tenant",
    )


async def test_storage_for_all_tenants_sums_every_tenant_and_the_disk(
    client, settings, writer, db
) -> None:
    await ingest_dataset(client, writer, per_tenant=300)
    # Across tenants takes the admin key, also where X-Tenant-ID is trusted.
    admin = await add_key(settings, SYSTEM_TENANT, "admin")
    response = await client.get(
        "/api/v1/logs/storage", params={"all_tenants": "true"}, headers=key_headers(admin)
    )
    assert response.status_code == 200, response.text
    everyone = response.json()["all_tenants"]
    assert {t["tenant_id"]: t["rows"] for t in everyone["tenants"]} == {
        str(TENANT): 300,
        str(OTHER_TENANT): 300,
    }
    assert everyone["rows"] == 600
    assert everyone["table_bytes"] > 0 and everyone["index_bytes"] > 0
    assert everyone["total_bytes"] == everyone["table_bytes"] + everyone["index_bytes"]
    assert everyone["bytes_per_row"] == pytest.approx(everyone["total_bytes"] / 600, abs=0.1)


async def test_storage_of_all_tenants_runs_under_the_query_timeout(settings, writer) -> None:
    """The cross-tenant read has QUERY_TIMEOUT_MS as any query: held up by a lock on a
    partition whose size it reads, it is stopped (503) while the tenant's own figures
    are not; released, it lists every tenant."""
    config = replace(settings, query_timeout_ms=100)
    admin = key_headers(await add_key(config, SYSTEM_TENANT, "admin"))
    fresh = {"Cache-Control": "no-cache"}
    async with AsyncTestClient(app=create_app(config)) as client:
        await ingest_dataset(client, writer, per_tenant=100)
        with psycopg.connect(config.postgres_conninfo()) as locker:
            partition = locker.execute(
                "SELECT relid::regclass::text FROM pg_partition_tree('log_entries') "
                "WHERE isleaf LIMIT 1"
            ).fetchone()
            assert partition is not None
            # Held until the block ends (the transaction stays open), or for 5 s at most:
            # a read without the timeout then gets its answer and fails the test, not hangs.
            locker.execute("SET idle_in_transaction_session_timeout = '5s'")
            locker.execute(f"LOCK TABLE {partition[0]} IN ACCESS EXCLUSIVE MODE")
            own = await client.get("/api/v1/logs/storage", headers=tenant_headers())
            assert own.status_code == 200, own.text
            held_up = await client.get(
                "/api/v1/logs/storage", params={"all_tenants": "true"}, headers=admin | fresh
            )
            assert held_up.status_code == 503, held_up.text
            assert "QUERY_TIMEOUT_MS" in held_up.json()["detail"]
        everyone = await client.get(
            "/api/v1/logs/storage", params={"all_tenants": "true"}, headers=admin | fresh
        )
    assert everyone.status_code == 200, everyone.text
    rows = {t["tenant_id"]: t["rows"] for t in everyone.json()["all_tenants"]["tenants"]}
    assert rows == {str(TENANT): 100, str(OTHER_TENANT): 100}


async def test_storage_of_all_tenants_needs_the_admin_scope(api_client, api_settings) -> None:
    tenant = await add_tenant(api_settings)
    key = await add_key(api_settings, tenant, "query")
    own = await api_client.get("/api/v1/logs/storage", headers=key_headers(key))
    assert own.status_code == 200, own.text
    assert own.json()["tenant_id"] == str(tenant)
    everyone = await api_client.get(
        "/api/v1/logs/storage", params={"all_tenants": "true"}, headers=key_headers(key)
    )
    assert everyone.status_code == 403
    assert everyone.headers["content-type"].startswith("application/problem+json")


async def test_no_endpoint_shows_a_count_or_service_of_another_tenant(client, writer) -> None:
    data = await ingest_dataset(client, writer, per_tenant=500)
    window = {"start_time": iso(data.start - timedelta(hours=1)), "end_time": iso(data.end)}
    for tenant, other in ((TENANT, OTHER_TENANT), (OTHER_TENANT, TENANT)):
        own = data.entries[tenant]
        foreign = {e["service_name"] for e in data.entries[other]}
        stats = await get_stats(client, LogFilter(**window), tenant)
        assert stats["total_count"] == len(own)
        assert not foreign & set(stats["by_service"])
        # Naming the other tenant's service finds nothing.
        named = await get_stats(client, LogFilter(**window, services=sorted(foreign)), tenant)
        assert named["total_count"] == 0 and named["by_service"] == {}
        response = await post_aggregate(
            client, {**window, "interval": "1h", "group_by": "service"}, tenant
        )
        buckets = response.json()["buckets"]
        assert sum(b["count"] for b in buckets) == len(own)
        assert not foreign & {b["service_name"] for b in buckets}
        services = await client.get(
            "/api/v1/logs/services", params=window, headers=tenant_headers(tenant)
        )
        names = {s["service_name"] for s in services.json()["services"]}
        assert names == {e["service_name"] for e in own}
        storage = await client.get("/api/v1/logs/storage", headers=tenant_headers(tenant))
        assert storage.json()["rows"] == len(own)
        # A tenant with nothing sees nothing at all.
        nobody = uuid.uuid4()
        empty = await get_stats(client, LogFilter(**window), nobody)
        assert empty["total_count"] == 0 and empty["by_service"] == {}


@pytest.mark.parametrize(
    ("start", "end", "coarsest"),
    [
        ("2024-01-15T10:30:15.5Z", "2024-01-22T08:07:00Z", rollups.DAY),
        ("2024-01-15T10:30:15.5Z", "2024-01-22T08:07:00Z", rollups.HOUR),
        ("2024-01-15T10:30:15Z", "2024-01-15T10:30:45Z", rollups.DAY),
        ("2024-01-15T00:00:00Z", "2024-01-17T00:00:00Z", rollups.DAY),
    ],
)
def test_a_range_is_cut_into_spans_that_tile_it_coarsest_inside(start, end, coarsest) -> None:
    lo, hi = datetime.fromisoformat(start), datetime.fromisoformat(end)
    spans = rollups.plan_spans(lo, hi, rollups=True, coarsest=coarsest)
    assert spans[0].start == lo and spans[-1].end == hi
    assert all(a.end == b.start for a, b in itertools.pairwise(spans))
    for span in spans:
        assert span.source.step <= coarsest
        if span.source is not rollups.Source.RAW:
            step = span.source.step
            assert rollups.floor_to(span.start, step) == span.start
            assert rollups.floor_to(span.end, step) == span.end
    steps = [s.source.step for s in spans]
    # Finest at the edges, coarsest in the middle: steps rise, then fall.
    peak = steps.index(max(steps))
    assert steps[: peak + 1] == sorted(steps[: peak + 1])
    assert steps[peak:] == sorted(steps[peak:], reverse=True)
    assert rollups.plan_spans(lo, hi, rollups=False) == [rollups.Span(rollups.Source.RAW, lo, hi)]


ROLLUP_CHECKS = {
    "log_counts_hourly": "date_trunc('hour', minute, 'UTC'), service_name, level, environment",
    "log_counts_daily": "date_trunc('day', minute, 'UTC'), service_name, level, environment",
    "log_counts_by_level": "minute, level",
}
# The hourly and daily tables hold the minutes before the watermark; by level, all of them.
COMPACTED_ONLY = {"log_counts_hourly", "log_counts_daily"}


def rollups_disagree(db) -> list[str]:
    """Each coarser rollup table, compared cell by cell with the minutes (log_counts' and
    the packed ones) summed the same way (sql/0007_rollup_compaction.sql says which
    minutes each table holds)."""
    problems = []
    for table, keys in ROLLUP_CHECKS.items():
        minutes = (
            "WHERE minute < (SELECT compacted_until FROM rollup_watermark)"
            if table in COMPACTED_ONLY
            else ""
        )
        expected = set(
            db.execute(
                f"SELECT tenant_id, {keys}, sum(count)::bigint, sum(bytes)::bigint "
                f"FROM log_count_minutes {minutes} GROUP BY tenant_id, {keys}"
            ).fetchall()
        )
        kept = set(db.execute(f"SELECT * FROM {table}").fetchall())
        if expected != kept:
            problems.append(f"{table}: {len(expected ^ kept)} cells differ")
    return problems


def watermark(db) -> datetime:
    return db.execute("SELECT compacted_until FROM rollup_watermark").fetchone()[0]


async def test_coarser_rollups_follow_log_counts_through_writes_and_deletes(
    client, writer, db
) -> None:
    data = await ingest_dataset(client, writer, per_tenant=400)
    assert rollups_disagree(db) == []
    compacted = watermark(db)
    assert data.start < compacted < data.end
    # Nothing from the watermark on is in the hourly table yet.
    hour_after = compacted.replace(minute=0) + timedelta(hours=1)
    assert db.execute(
        "SELECT count(*) FROM log_counts_hourly WHERE hour >= %s", (hour_after,)
    ).fetchone() == (0,)
    # More rows into the same minutes (the writer's upsert updates existing cells), before
    # the watermark (late entries) and after it.
    again = [
        {"service_name": "payment", "level": "ERROR", "message": "x", "timestamp": iso(ts)}
        for ts in (data.start, data.start + timedelta(minutes=90), data.end - timedelta(seconds=1))
    ]
    response = await client.post(
        "/api/v1/logs/batch", json={"entries": again}, headers=tenant_headers()
    )
    assert response.status_code == 202
    await writer.drain()
    assert rollups_disagree(db) == []
    # Deleting minutes on both sides of the watermark.
    db.execute(
        "DELETE FROM log_counts WHERE minute BETWEEN %s AND %s",
        (data.start + timedelta(minutes=140), data.start + timedelta(minutes=160)),
    )
    assert rollups_disagree(db) == []
    # Compaction to the end takes in the rest, each minute once.
    with psycopg.connect(writer.settings.postgres_conninfo()) as conn:
        assert compact_step(conn, now=data.end + timedelta(hours=1)) is not None
        assert compact_step(conn, now=data.end + timedelta(hours=1)) is None
    assert watermark(db) > data.end
    assert rollups_disagree(db) == []
    totals = db.execute(
        "SELECT (SELECT sum(count) FROM log_counts), (SELECT sum(count) FROM log_counts_daily), "
        "(SELECT sum(count) FROM log_counts_hourly)"
    ).fetchone()
    assert totals[0] == totals[1] == totals[2] > 0
    # Retention deleting old minutes takes them out of every coarser table too.
    db.execute("DELETE FROM log_counts WHERE minute < %s", (data.start + timedelta(minutes=75),))
    assert rollups_disagree(db) == []
    db.execute("DELETE FROM log_counts")
    for table in ROLLUP_CHECKS:
        assert db.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
