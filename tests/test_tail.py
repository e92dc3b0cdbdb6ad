"""Live tail: every committed log reaches every matching client of its tenant, in commit
order, exactly once, across gateways, reconnects, lost publishes, slow clients and
shutdowns; or the client is told exactly what it did not get and where to resume.

Gateways run as real uvicorn processes (SSE needs a real socket); the writer runs in the
test process with its tail publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from services.writer.__main__ import configure_connection
from services.writer.consumer import StreamConsumer
from services.writer.loop import Writer
from services.writer.tail import TailPublisher, record_tail_batches
from shared.db import make_pool
from shared.redis_conn import make_redis
from shared.redis_keys import RedisKeys
from shared.settings import Settings
from shared.tail import prune_tail_batches
from tests.conftest import clone_database, drop_database, drop_keys
from tests.polling import wait_until
from tests.processes import Service, free_port, service_env, wait_ready
from tests.tail_client import SSEEvent, SSEStream, TcpProxy

STREAM = "/api/v1/logs/stream"
CLIENT_BUFFER = 100
MAX_CLIENTS_PER_TENANT = 3
POLL_SECONDS = 0.5


@dataclass
class TailEnv:
    settings: Settings
    gateways: list[Service]
    ports: list[int]
    logs: Path


def _start_gateway(settings: Settings, logs: Path) -> tuple[Service, int]:
    port = free_port()
    gateway = Service("services.gateway", service_env(replace(settings, server_port=port)), logs)
    return gateway, port


@pytest.fixture(scope="module")
def tail_env(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TailEnv]:
    """Two gateways on one database and key prefix; tests use their own tenants."""
    suffix = uuid.uuid4().hex[:12]
    settings = replace(
        base_settings,
        postgres_db=f"mlog_tail_{suffix}",
        redis_key_prefix=f"test-tail-{suffix}",
        auth_mode="trusted_header",
        writer_batch_wait_ms=20,
        tail_heartbeat_seconds=1.0,
        tail_client_buffer=CLIENT_BUFFER,
        tail_max_clients_per_tenant=MAX_CLIENTS_PER_TENANT,
        tail_poll_seconds=POLL_SECONDS,
    )
    clone_database(base_settings, settings.postgres_db)
    logs = tmp_path_factory.mktemp("tail")
    started = [_start_gateway(settings, logs) for _ in range(2)]
    try:
        for gateway, port in started:
            wait_ready(gateway, f"http://127.0.0.1:{port}")
        yield TailEnv(settings, [g for g, _ in started], [p for _, p in started], logs)
    finally:
        for gateway, _ in started:
            gateway.close()
        drop_database(base_settings, settings.postgres_db)
        drop_keys(settings)


@contextlib.asynccontextmanager
async def writer_for(settings: Settings, *, publish: bool = True) -> AsyncIterator[Writer]:
    """An in-process writer; with publish=False its publishes fail (Redis unreachable)."""
    pool = make_pool(
        settings, name="tail-writer", min_size=0, max_size=2, configure=configure_connection
    )
    await pool.open()
    redis = make_redis(settings, blocking=True)
    dead = make_redis(replace(settings, redis_port=free_port()))
    keys = RedisKeys.from_settings(settings)
    consumer = StreamConsumer(redis, keys, f"tail-{uuid.uuid4().hex[:8]}", 60_000)
    await consumer.ensure_groups()
    publisher = TailPublisher(redis if publish else dead, keys)
    try:
        yield Writer(settings, pool, consumer, partition_unit="day", tail=publisher)
    finally:
        await dead.aclose()
        await redis.aclose()
        await pool.close()


@pytest.fixture
async def running_writer(tail_env: TailEnv) -> AsyncIterator[Writer]:
    """A writer storing (and publishing) continuously, as in production."""
    async with writer_for(tail_env.settings) as writer:
        stop = asyncio.Event()
        task = asyncio.create_task(writer.run(stop))
        yield writer
        stop.set()
        await task


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def entries(prefix: str, n: int, **fields: Any) -> list[dict[str, Any]]:
    base = {"service_name": "api", "level": "INFO"} | fields
    return [base | {"message": f"{prefix} {i}"} for i in range(n)]


async def ingest(
    http: httpx.AsyncClient, port: int, tenant: uuid.UUID, batch: list[dict[str, Any]]
) -> None:
    response = await http.post(
        f"http://127.0.0.1:{port}/api/v1/logs/batch",
        json={"entries": batch},
        headers={"X-Tenant-ID": str(tenant)},
    )
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == len(batch)


async def tail(port: int, tenant: uuid.UUID, query: str = "", **headers: str) -> SSEStream:
    """An open stream, past its opening heartbeat."""
    stream = await SSEStream.open(
        port, STREAM + query, {"X-Tenant-ID": str(tenant)} | _headers(headers)
    )
    assert stream.status == 200, stream.body
    opening = await stream.next_event()
    assert opening is not None and opening.event == "heartbeat" and opening.retry is not None
    return stream


def _headers(headers: dict[str, str]) -> dict[str, str]:
    return {name.replace("_", "-"): value for name, value in headers.items()}


def messages(events: list[SSEEvent]) -> list[str]:
    return [e.json()["message"] for e in events]


def key(event_id: str | None) -> tuple[int, int]:
    assert event_id is not None
    seq, _, index = event_id.partition("-")
    return int(seq), int(index) if index else 1 << 62


def assert_in_tail_order(events: list[SSEEvent]) -> None:
    keys = [key(e.id) for e in events]
    assert keys == sorted(keys) and len(set(keys)) == len(keys), "ids not strictly increasing"


async def test_logs_reach_clients_on_both_gateways_filtered_within_a_second(
    tail_env: TailEnv, running_writer: Writer, http: httpx.AsyncClient
) -> None:
    tenant = uuid.uuid4()
    one, two = tail_env.ports
    everything = await tail(one, tenant)
    errors_of_api = await tail(two, tenant, "?service_name=api&min_level=ERROR")
    checkout_meta = await tail(two, tenant, "?metadata.region=eu&search=paid")

    started = time.monotonic()
    await ingest(http, one, tenant, entries("info", 3))
    await ingest(http, two, tenant, entries("error", 2, level="ERROR"))
    await ingest(http, one, tenant, entries("other error", 2, level="FATAL", service_name="db"))
    await ingest(
        http,
        two,
        tenant,
        entries("order paid", 2, metadata={"region": "eu"})
        + entries("order paid", 1, metadata={"region": "us"}),
    )
    got_all = await everything.logs(10, within=1.0)
    got_errors = await errors_of_api.logs(2, within=max(0.1, started + 1.0 - time.monotonic()))
    got_meta = await checkout_meta.logs(2, within=max(0.1, started + 1.0 - time.monotonic()))

    assert sorted(messages(got_all)) == sorted(
        [f"info {i}" for i in range(3)]
        + [f"error {i}" for i in range(2)]
        + [f"other error {i}" for i in range(2)]
        + [f"order paid {i}" for i in range(2)]
        + ["order paid 0"]
    )
    assert messages(got_errors) == ["error 0", "error 1"]
    assert [e.json()["metadata"] for e in got_meta] == [{"region": "eu"}] * 2
    for events in (got_all, got_errors, got_meta):
        assert_in_tail_order(events)
        assert all(e.json()["tenant_id"] == str(tenant) for e in events)
    # A filtered client's events carry the same ids as the unfiltered client's.
    ids = {e.json()["id"]: e.id for e in got_all}
    assert all(ids[e.json()["id"]] == e.id for e in got_errors + got_meta)
    # Replayed from PostgreSQL (the filter compiled to SQL), the same events, same ids.
    for query, live in [
        ("?service_name=api&min_level=ERROR", got_errors),
        ("?metadata.region=eu&search=paid", got_meta),
    ]:
        replay = await tail(one, tenant, query + "&since=0")
        again = await replay.logs(len(live), within=5)
        assert [(e.id, e.json()) for e in again] == [(e.id, e.json()) for e in live]
        replay.close()
    for stream in (everything, errors_of_api, checkout_meta):
        stream.close()


async def test_reconnect_with_last_event_id_gets_exactly_the_500_missed_in_order(
    tail_env: TailEnv, running_writer: Writer, http: httpx.AsyncClient
) -> None:
    tenant = uuid.uuid4()
    one, two = tail_env.ports
    reference = await tail(two, tenant)  # connected throughout: what "in order" means
    client = await tail(one, tenant)
    await ingest(http, one, tenant, entries("before", 10))
    seen = await client.logs(10, within=5)
    client.close()

    for part in range(5):
        await ingest(http, (one, two)[part % 2], tenant, entries(f"missed {part}", 100))
    expected = (await reference.logs(510, within=10))[10:]

    resumed = await tail(two, tenant, last_event_id=seen[-1].id or "")
    got = await resumed.logs(500, within=10)
    assert [(e.id, e.data) for e in got] == [(e.id, e.data) for e in expected]
    # Nothing more: the next event is a heartbeat, at the position of the last log.
    after = await resumed.collect(lambda e: bool(e), within=5, kinds=("log", "heartbeat"))
    assert after[0].event == "heartbeat" and after[0].id == got[-1].id.split("-")[0]
    reference.close()
    resumed.close()


async def test_resume_while_logs_keep_coming_has_no_gap_and_no_duplicate(
    tail_env: TailEnv, running_writer: Writer, http: httpx.AsyncClient
) -> None:
    tenant = uuid.uuid4()
    one, two = tail_env.ports
    reference = await tail(two, tenant)
    client = await tail(one, tenant)
    await ingest(http, one, tenant, entries("first", 5))
    seen = await client.logs(5, within=5)
    client.close()
    halfway = asyncio.Event()

    async def keep_ingesting() -> None:
        for part in range(30):
            await ingest(http, (one, two)[part % 2], tenant, entries(f"during {part}", 20))
            if part == 10:
                halfway.set()

    load = asyncio.create_task(keep_ingesting())
    await halfway.wait()
    resumed = await tail(one, tenant, f"?since={seen[-1].id}")
    await load
    expected = (await reference.logs(605, within=15))[5:]
    got = await resumed.logs(600, within=15)
    assert [(e.id, e.data) for e in got] == [(e.id, e.data) for e in expected]
    reference.close()
    resumed.close()


async def test_client_that_never_reads_gets_dropped_and_gateway_memory_stays_bounded(
    tail_env: TailEnv, running_writer: Writer, http: httpx.AsyncClient
) -> None:
    tenant = uuid.uuid4()
    port, gateway = tail_env.ports[0], tail_env.gateways[0]
    slow = await SSEStream.open(port, STREAM, {"X-Tenant-ID": str(tenant)}, receive_buffer=4096)
    assert slow.status == 200
    padding, per_round, rounds = "x" * 300, 20_000, 3
    rss = []
    for round_ in range(rounds):
        for part in range(per_round // 500):
            await ingest(http, port, tenant, entries(f"{padding} {round_}.{part}", 500))
        stored = per_round * (round_ + 1)
        await wait_until(
            lambda n=stored: _stored(tail_env.settings, tenant) >= n, within=60, what="storage"
        )
        rss.append(_rss_kib(gateway.pid))
    total = per_round * rounds
    # Each round sends the client ~11 MB of events it does not read. After the first
    # round the gateway's memory no longer grows with what it cannot deliver: holding
    # them would add at least 22 MB over the next two rounds. What it does grow by is
    # the allocator's, and more when the machine is busy (requests overlap): up to 7.4
    # MB beside two busy-looping processes, 8.4 once in CI beside the other tests.
    assert rss[-1] - rss[0] < 16 * 1024, rss

    # Now read: what was in flight, then `dropped` saying how many and from where.
    got = await slow.collect(lambda e: False, within=30, kinds=("log", "dropped"))
    logs, final = got[:-1], got[-1]
    assert final.event == "dropped", [e.event for e in got[-3:]]
    drop = final.json()
    assert drop["reason"] == "slow_client" and drop["dropped"] > 0
    assert all(e.event == "log" for e in logs)
    assert len(logs) + drop["dropped"] <= total
    assert_in_tail_order(logs)
    assert drop["resume_from"] == final.id
    assert not logs or key(final.id) == key(logs[-1].id.split("-")[0])

    rest = await tail(port, tenant, last_event_id=drop["resume_from"])
    remaining = await rest.logs(total - len(logs), within=30)
    assert len({e.json()["id"] for e in logs + remaining}) == total
    assert_in_tail_order(logs + remaining)
    rest.close()


async def test_tenant_stream_never_carries_another_tenants_logs(
    tail_env: TailEnv, running_writer: Writer, http: httpx.AsyncClient
) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    port = tail_env.ports[0]
    stream_a = await tail(port, a)
    stream_b = await tail(port, b)
    for part in range(3):
        await ingest(http, port, a, entries(f"a {part}", 5))
        await ingest(http, port, b, entries(f"b {part}", 5))
    got_a = await stream_a.logs(15, within=5)
    got_b = await stream_b.logs(15, within=5)
    assert all(e.json()["tenant_id"] == str(a) and e.data.count('"a ') for e in got_a)
    assert all(e.json()["tenant_id"] == str(b) and e.data.count('"b ') for e in got_b)
    # Positions are per tenant: resuming B's stream from the start replays only B's logs.
    replay_b = await tail(port, b, "?since=0")
    assert messages(await replay_b.logs(15, within=5)) == messages(got_b)
    for stream in (stream_a, stream_b, replay_b):
        stream.close()


async def test_lost_publishes_are_read_from_postgres_in_order(
    tail_env: TailEnv, http: httpx.AsyncClient
) -> None:
    tenant = uuid.uuid4()
    port = tail_env.ports[1]
    client = await tail(port, tenant)
    async with (
        writer_for(tail_env.settings, publish=False) as mute,
        writer_for(tail_env.settings) as loud,
    ):
        await ingest(http, port, tenant, entries("lost", 3))
        await mute.drain()
        await ingest(http, port, tenant, entries("published", 2))
        await loud.drain()
        # The commit whose publish was lost comes first, read from PostgreSQL.
        got = await client.logs(5, within=5)
        assert messages(got) == [f"lost {i}" for i in range(3)] + ["published 0", "published 1"]
        assert [e.id for e in got] == ["1-0", "1-1", "1-2", "2-0", "2-1"]

        # A lost publish with nothing after it is found by the poll of PostgreSQL.
        await ingest(http, port, tenant, entries("last", 1))
        await mute.drain()
        got = await client.logs(1, within=POLL_SECONDS + 3)
        assert messages(got) == ["last 0"] and got[0].id == "3-0"
    client.close()


async def test_commits_published_while_the_subscription_is_down_are_not_skipped(
    tail_env: TailEnv, running_writer: Writer, http: httpx.AsyncClient
) -> None:
    tenant = uuid.uuid4()
    proxy = TcpProxy(tail_env.settings.redis_port)
    await proxy.start()
    behind_proxy = replace(tail_env.settings, redis_port=proxy.port)
    gateway, port = _start_gateway(behind_proxy, tail_env.logs)
    try:
        with gateway:
            await asyncio.to_thread(wait_ready, gateway, f"http://127.0.0.1:{port}")
            client = await tail(port, tenant)
            ingest_port = tail_env.ports[0]  # straight to Redis
            await ingest(http, ingest_port, tenant, entries("before", 2))
            assert messages(await client.logs(2, within=5)) == ["before 0", "before 1"]

            proxy.cut()  # Redis "restarts": the subscription is gone, publishes are lost
            for part in range(3):
                await ingest(http, ingest_port, tenant, entries(f"while down {part}", 2))
            await wait_until(
                lambda: _stored(tail_env.settings, tenant) >= 8, within=10, what="storage"
            )
            proxy.restore()
            got = await client.logs(6, within=15)
            assert messages(got) == [f"while down {p} {i}" for p in range(3) for i in range(2)]
            assert_in_tail_order(got)

            await ingest(http, ingest_port, tenant, entries("after", 1))
            assert messages(await client.logs(1, within=5)) == ["after 0"]
            client.close()
    finally:
        await proxy.close()


async def test_resume_from_before_the_window_says_what_is_dropped_then_continues(
    tail_env: TailEnv, running_writer: Writer, http: httpx.AsyncClient
) -> None:
    tenant = uuid.uuid4()
    port = tail_env.ports[0]
    watcher = await tail(port, tenant)
    for part in range(3):
        await ingest(http, port, tenant, entries(f"old {part}", 2))
        await watcher.logs(2, within=5)
    with psycopg.connect(tail_env.settings.postgres_conninfo(), autocommit=True) as conn:
        # As the janitor does once those commits are older than TAIL_RESUME_WINDOW.
        assert prune_tail_batches(conn, 0) >= 3
    await ingest(http, port, tenant, entries("new", 2))
    await watcher.logs(2, within=5)

    resumed = await tail(port, tenant, "?since=1-0")
    got = await resumed.collect(lambda e: len(e) >= 3, within=5, kinds=("log", "dropped"))
    assert got[0].event == "dropped"
    assert got[0].json()["reason"] == "resume_window" and got[0].id == "3"
    assert messages(got[1:]) == ["new 0", "new 1"] and [e.id for e in got[1:]] == ["4-0", "4-1"]
    watcher.close()
    resumed.close()


async def test_sigterm_ends_streams_with_a_final_event_and_clients_resume_elsewhere(
    tail_env: TailEnv, running_writer: Writer, http: httpx.AsyncClient
) -> None:
    tenant = uuid.uuid4()
    leaving, port = _start_gateway(tail_env.settings, tail_env.logs)
    with leaving:
        wait_ready(leaving, f"http://127.0.0.1:{port}")
        client = await tail(port, tenant)
        await ingest(http, port, tenant, entries("before", 3))
        seen = await client.logs(3, within=5)
        leaving.signal(signal.SIGTERM)
        final = await client.collect(lambda e: bool(e), within=10, kinds=("dropped",))
        assert final[0].json()["reason"] == "shutdown"
        assert final[0].json()["resume_from"] == seen[-1].id.split("-")[0]
        assert await client.next_event() is None  # the stream ended
        # uvicorn re-raises the signal once it has shut down cleanly.
        assert leaving.wait(timeout=15) in (0, -signal.SIGTERM)

    other = tail_env.ports[0]
    await ingest(http, other, tenant, entries("after", 4))
    resumed = await tail(other, tenant, last_event_id=final[0].id or "")
    assert messages(await resumed.logs(4, within=5)) == [f"after {i}" for i in range(4)]
    resumed.close()


async def test_stream_limits_and_bad_requests_are_problems(tail_env: TailEnv) -> None:
    tenant = uuid.uuid4()
    port = tail_env.ports[0]
    streams = [await tail(port, tenant) for _ in range(MAX_CLIENTS_PER_TENANT)]
    assert streams[0].headers["cache-control"] == "no-cache"
    assert streams[0].headers["x-accel-buffering"] == "no"
    assert streams[0].headers["content-type"].startswith("text/event-stream")

    refused = await SSEStream.open(port, STREAM, {"X-Tenant-ID": str(tenant)})
    assert refused.status == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert b"tail_max_clients_per_tenant" in refused.body
    other_tenant = await tail(port, uuid.uuid4())  # the limit is per tenant

    streams.pop().close()  # a slot is freed as soon as the gateway sees the hang-up

    async def admitted() -> bool:
        probe = await SSEStream.open(port, STREAM, {"X-Tenant-ID": str(tenant)})
        probe.close()
        return probe.status == 200

    await wait_until(admitted, within=5, what="a freed stream slot")

    for query, headers, status in [
        ("?since=yesterday", {}, 400),
        ("", {"Last-Event-ID": "12-x"}, 400),
        ("?level=LOUD", {}, 422),
        ("?sevrity=ERROR", {}, 400),
    ]:
        bad = await SSEStream.open(port, STREAM + query, {"X-Tenant-ID": str(tenant)} | headers)
        assert bad.status == status, (query, headers, bad.body)
        assert bad.headers["content-type"] == "application/problem+json"
    for stream in [*streams, other_tenant]:
        stream.close()


async def test_one_tenants_commits_are_numbered_in_commit_order_without_gaps(
    settings: Settings, db: psycopg.Connection
) -> None:
    from datetime import UTC, datetime

    from shared.model import IngestMessage, LogRecord, StoredMessage
    from shared.streams import decode_message, encode_message

    tenant = uuid.uuid4()

    def message() -> StoredMessage:
        now = datetime.now(UTC)
        record = LogRecord(uuid.uuid4(), now, 2, "api", "m", *[None] * 8)
        return decode_message(encode_message(IngestMessage(tenant, now, [record])))

    first = await psycopg.AsyncConnection.connect(settings.postgres_conninfo())
    second = await psycopg.AsyncConnection.connect(settings.postgres_conninfo())
    async with first, second:
        for conn in (first, second):
            await configure_connection(conn)  # as the writer's pool does
        async with first.transaction():
            assert [b.seq for b in await record_tail_batches(first, [message()])] == [1]
            # A concurrent commit of the same tenant waits for this one to commit.
            waiting = asyncio.create_task(record_tail_batches(second, [message()]))
            await wait_until(
                lambda: _waits_for_lock(db, second.info.backend_pid),
                within=5,
                what="the second commit to wait for the tenant's number",
            )
            assert not waiting.done()
        assert [b.seq for b in await waiting] == [2]
        await second.commit()
        with contextlib.suppress(RuntimeError):
            async with first.transaction():
                await record_tail_batches(first, [message()])
                raise RuntimeError("rolled back")
        async with first.transaction():
            assert [b.seq for b in await record_tail_batches(first, [message()])] == [3]
    rows = db.execute("SELECT seq, rows FROM tail_batches WHERE tenant_id = %s", (tenant,))
    assert sorted(rows.fetchall()) == [(1, 1), (2, 1), (3, 1)]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _waits_for_lock(db: psycopg.Connection, pid: int) -> bool:
    row = db.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,))
    found = row.fetchone()
    return found is not None and found[0] == "Lock"


def _stored(settings: Settings, tenant: uuid.UUID) -> int:
    with psycopg.connect(settings.postgres_conninfo()) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(rows), 0) FROM tail_batches WHERE tenant_id = %s", (tenant,)
        ).fetchone()
    return int(row[0]) if row else 0
