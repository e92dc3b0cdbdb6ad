"""The Python client (`clients/python`, package minisource_log_client): retry decisions,
gzip, the bounded queue and the logging handler's mapping on their own, then the client
against real gateway and writer processes: records logged while the gateway answers 503
are stored exactly once, in order, with the queue's bound holding throughout."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import random
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from minisource_log_client import (
    Action,
    AsyncLogClient,
    LogClient,
    MinisourceHandler,
    RetryPolicy,
    parse_retry_after,
    record_to_entry,
)
from minisource_log_client.buffer import Buffer
from minisource_log_client.client import in_sender
from minisource_log_client.diagnostics import LOGGER_NAME
from opentelemetry.sdk.trace import TracerProvider

from shared.settings import Settings
from tests.keyring import add_key, add_tenant
from tests.pipeline import pending_ids, row_count
from tests.polling import wait_until
from tests.processes import Service, free_port, service_env

# Policy decisions ---------------------------------------------------------------------

POLICY = RetryPolicy(base_delay=0.5, max_delay=30.0)


@pytest.mark.parametrize(
    ("status", "retry_after", "action"),
    [
        (202, None, Action.DONE),
        (200, None, Action.DONE),
        (429, "3", Action.RETRY),
        (503, "2", Action.RETRY),
        (500, None, Action.RETRY),
        (502, None, Action.RETRY),
        (None, None, Action.RETRY),
        (400, None, Action.REJECT),
        (401, None, Action.REJECT),
        (403, None, Action.REJECT),
        (404, None, Action.REJECT),
        (415, None, Action.REJECT),
        (422, None, Action.REJECT),
        (413, None, Action.SPLIT),
    ],
)
def test_only_429_5xx_and_no_answer_are_retried(status, retry_after, action) -> None:
    assert POLICY.decide(status, retry_after, attempt=0, records=10).action is action


def test_retry_after_is_honoured_never_earlier_with_a_little_jitter() -> None:
    rng = random.Random(7)
    for status in (429, 503):
        delays = [POLICY.decide(status, "4", 0, 10, rng).delay for _ in range(200)]
        assert all(4.0 <= d <= 4.4 for d in delays)
        assert len(set(delays)) > 1
    # An HTTP date works too; a Retry-After past max_retry_after is capped.
    assert parse_retry_after("Sun, 06 Dec 2026 04:00:10 GMT", now=1796529600.0) == 10.0
    capped = RetryPolicy(max_retry_after=5).decide(503, "3600", 0, 1, rng)
    assert 5.0 <= capped.delay <= 5.5
    assert parse_retry_after("soon") is None


def test_backoff_grows_exponentially_is_jittered_and_capped() -> None:
    rng = random.Random(3)
    for attempt in range(12):
        step = min(30.0, 0.5 * 2**attempt)
        delays = [POLICY.decide(None, None, attempt, 10, rng).delay for _ in range(100)]
        assert all(step / 2 <= d <= step for d in delays)
        assert len(set(delays)) > 1


def test_a_single_entry_too_large_is_rejected_not_split() -> None:
    assert POLICY.decide(413, None, attempt=0, records=1).action is Action.REJECT


# The client against a scripted server (httpx.MockTransport) ----------------------------


class ScriptedGateway:
    """Answers requests with the statuses given, in turn (then 202s), and keeps them."""

    def __init__(self, *statuses: int, retry_after: str = "0") -> None:
        self.statuses = list(statuses)
        self.retry_after = retry_after
        self.requests: list[httpx.Request] = []
        self.received = threading.Event()

    def entries(self, request: httpx.Request) -> list[dict[str, Any]]:
        body = request.content
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        return json.loads(body)["entries"]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.received.set()
        status = self.statuses.pop(0) if self.statuses else 202
        if status == 202:
            count = len(self.entries(request))
            answer = {"accepted": count, "rejected": 0, "ids": [], "errors": []}
            return httpx.Response(202, json=answer)
        headers = {"Retry-After": self.retry_after} if status in (429, 503) else {}
        return httpx.Response(status, json={"title": "no", "status": status}, headers=headers)


def scripted_client(gateway: ScriptedGateway, **options: Any) -> LogClient:
    options = {"service_name": "svc", "flush_at_exit": False, **options}
    return LogClient(
        "http://gateway.test", "mlk_x", transport=httpx.MockTransport(gateway), **options
    )


def test_a_retried_batch_keeps_its_idempotency_key_and_its_order() -> None:
    gateway = ScriptedGateway(503, 429, 500)
    with scripted_client(gateway, max_batch_records=50) as client:
        for i in range(50):
            assert client.log(level="INFO", message=f"m{i}", seq=i)
        assert client.flush(10)
        stats = client.stats()
    assert len(gateway.requests) == 4
    keys = {r.headers["idempotency-key"] for r in gateway.requests}
    assert len(keys) == 1 and len(keys.pop()) == 32
    assert all(r.headers["authorization"] == "Bearer mlk_x" for r in gateway.requests)
    for request in gateway.requests:
        assert [e["metadata"]["seq"] for e in gateway.entries(request)] == list(range(50))
    assert (stats.sent, stats.retries, stats.batches_sent, stats.dropped) == (50, 3, 1, 0)


def test_a_lone_record_is_sent_after_the_flush_interval_without_a_flush() -> None:
    gateway = ScriptedGateway()
    with scripted_client(gateway, flush_interval=0.05) as client:
        client.log(level="INFO", message="first")
        assert gateway.received.wait(10)
        gateway.received.clear()
        client.log(level="INFO", message="second, into an empty queue again")
        assert gateway.received.wait(10)
    assert len(gateway.requests) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 422])
def test_a_4xx_other_than_429_is_not_retried_and_counted_rejected(status) -> None:
    gateway = ScriptedGateway(status)
    with scripted_client(gateway) as client:
        client.log(level="ERROR", message="x")
        assert client.flush(10)
        stats = client.stats()
    assert len(gateway.requests) == 1
    assert (stats.sent, stats.rejected, stats.retries) == (0, 1, 0)


def test_413_sends_each_half_with_a_new_key_in_order() -> None:
    gateway = ScriptedGateway(413)
    with scripted_client(gateway, max_batch_records=10) as client:
        for i in range(10):
            client.log(level="INFO", message=f"m{i}", seq=i)
        assert client.flush(10)
        assert client.stats().sent == 10
    sent = [[e["metadata"]["seq"] for e in gateway.entries(r)] for r in gateway.requests]
    assert sent == [list(range(10)), list(range(5)), list(range(5, 10))]
    assert len({r.headers["idempotency-key"] for r in gateway.requests}) == 3


def test_batches_over_a_kilobyte_are_gzipped_smaller_ones_are_not() -> None:
    gateway = ScriptedGateway()
    with scripted_client(gateway, max_batch_records=100) as client:
        client.log(level="INFO", message="alone")
        assert client.flush(10)
        for i in range(100):
            client.log(level="INFO", message=f"repeated message number {i}")
        assert client.flush(10)
    small, large = gateway.requests
    assert "content-encoding" not in small.headers
    assert large.headers["content-encoding"] == "gzip"
    assert len(large.content) * 4 < len(gzip.decompress(large.content))
    assert [e["message"] for e in gateway.entries(large)][-1] == "repeated message number 99"
    plain = ScriptedGateway()
    with scripted_client(plain, gzip=False, max_batch_records=100) as client:
        for i in range(100):
            client.log(level="INFO", message=f"repeated message number {i}")
        assert client.flush(10)
    assert "content-encoding" not in plain.requests[0].headers


def test_log_fills_the_entry_as_the_seed_names_it() -> None:
    gateway = ScriptedGateway()
    client = scripted_client(gateway, host="pod-1", environment="production")
    with client:
        client.log(
            service_name="auth-service",
            level="warning",
            message="Failed to authenticate user",
            trace_id="abc123def456",
            user_id="user-uuid",
            request_id="req-123",
            source="handler/auth.go:45",
            metadata={"error_code": "AUTH_001"},
            ip_address="192.168.1.1",
        )
        with pytest.raises(ValueError, match="unknown level"):
            client.log(level="LOUD", message="x")
        assert client.flush(10)
    (entry,) = gateway.entries(gateway.requests[0])
    timestamp = entry.pop("timestamp")
    assert timestamp.endswith("Z") and "T" in timestamp
    assert entry == {
        "service_name": "auth-service",
        "level": "WARN",
        "message": "Failed to authenticate user",
        "trace_id": "abc123def456",
        "user_id": "user-uuid",
        "request_id": "req-123",
        "source": "handler/auth.go:45",
        "metadata": {"error_code": "AUTH_001", "ip_address": "192.168.1.1"},
        "host": "pod-1",
        "environment": "production",
    }


# The bounded queue ----------------------------------------------------------------------


def test_drop_new_refuses_and_drop_old_evicts_both_counted_within_the_bound() -> None:
    newest = Buffer(max_records=3, max_bytes=1000, overflow="drop_new")
    assert [newest.put(b"%d" % i) for i in range(5)] == [True, True, True, False, False]
    assert newest.take(10, 1000) == [b"0", b"1", b"2"]
    oldest = Buffer(max_records=3, max_bytes=1000, overflow="drop_old")
    assert all(oldest.put(b"%d" % i) for i in range(5))
    assert oldest.take(10, 1000) == [b"2", b"3", b"4"]
    by_bytes = Buffer(max_records=100, max_bytes=10, overflow="drop_new")
    assert [by_bytes.put(b"abcd") for _ in range(3)] == [True, True, False]
    assert not by_bytes.put(b"x" * 11)  # larger than the whole bound: never fits
    for buffer, full, large in ((newest, 2, 0), (oldest, 2, 0), (by_bytes, 1, 1)):
        stats = buffer.snapshot()
        assert (stats.dropped_queue_full, stats.dropped_too_large) == (full, large)
        assert stats.queue_records_high <= buffer.max_records
        assert stats.queue_bytes_high <= buffer.max_bytes


def test_a_batch_is_cut_by_count_and_by_bytes() -> None:
    buffer = Buffer(max_records=100, max_bytes=10_000, overflow="drop_new")
    for _ in range(10):
        buffer.put(b"x" * 99)
    assert len(buffer.take(3, 10_000)) == 3
    assert len(buffer.take(100, 450)) == 4  # 4 x (99 + a comma) fit in 450 bytes
    assert len(buffer.take(100, 10)) == 1  # at least one, however large


# The handler's mapping ------------------------------------------------------------------


def _record(
    logger: logging.Logger, level: int, message: str, *args: object, **kwargs: Any
) -> logging.LogRecord:
    captured: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record)

    capture = Capture()
    logger.addHandler(capture)
    try:
        logger.log(level, message, *args, **kwargs)
    finally:
        logger.removeHandler(capture)
    return captured[0]


@pytest.fixture
def quiet_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger(f"tests.client.{uuid.uuid4().hex[:8]}")
    logger.propagate = False
    logger.setLevel(1)  # every level, custom ones below DEBUG too
    yield logger
    logger.handlers.clear()


@pytest.mark.parametrize(
    ("level", "name"),
    [
        (logging.DEBUG, "DEBUG"),
        (5, "DEBUG"),
        (logging.INFO, "INFO"),
        (logging.WARNING, "WARN"),
        (logging.ERROR, "ERROR"),
        (logging.CRITICAL, "FATAL"),
        (45, "ERROR"),
    ],
)
def test_python_levels_map_to_the_five(quiet_logger, level, name) -> None:
    entry = record_to_entry(_record(quiet_logger, level, "m"), "svc")
    assert entry["level"] == name


def test_the_handler_maps_logger_source_exception_and_extra(quiet_logger) -> None:
    try:
        1 / 0
    except ZeroDivisionError:
        record = _record(
            quiet_logger,
            logging.ERROR,
            "charge %s failed",
            "c-7",
            exc_info=True,
            extra={"request_id": "req-9", "order": {"id": 42}, "user_id": "u-1"},
        )
    entry = record_to_entry(record, "billing")
    assert entry["service_name"] == "billing"
    assert entry["message"] == "charge c-7 failed"
    assert entry["source"] == f"{__file__}:{record.lineno}"
    assert (entry["request_id"], entry["user_id"]) == ("req-9", "u-1")
    metadata = entry["metadata"]
    assert metadata["logger"] == quiet_logger.name
    assert metadata["order"] == {"id": 42}
    assert metadata["exception_type"] == "ZeroDivisionError"
    assert "Traceback" in metadata["exception"] and "1 / 0" in metadata["exception"]
    assert "trace_id" not in entry
    assert entry["timestamp"].endswith("Z")


def test_the_handler_adds_the_current_spans_ids(quiet_logger) -> None:
    tracer = TracerProvider().get_tracer("tests")
    with tracer.start_as_current_span("checkout") as span:
        entry = record_to_entry(_record(quiet_logger, logging.INFO, "in a span"), "svc")
        context = span.get_span_context()
    assert entry["trace_id"] == f"{context.trace_id:032x}"
    assert entry["span_id"] == f"{context.span_id:016x}"


def test_the_handler_never_ships_its_own_diagnostics(quiet_logger) -> None:
    gateway = ScriptedGateway()
    handler = MinisourceHandler(client=scripted_client(gateway))
    own = logging.getLogger(LOGGER_NAME)
    own.addHandler(handler)
    quiet_logger.addHandler(handler)
    try:
        own.warning("the client's own warning")
        logging.getLogger(f"{LOGGER_NAME}.child").warning("nor its children")
        token = in_sender.set(True)  # as inside the sender: httpx's own log lines
        try:
            quiet_logger.info("logged by the sender")
        finally:
            in_sender.reset(token)
        quiet_logger.info("the application's")
        handler.flush()
        assert handler.client.stats().queued == 1
    finally:
        own.removeHandler(handler)
        handler.close()
    assert [e["message"] for e in gateway.entries(gateway.requests[0])] == ["the application's"]


# Against real gateway and writer processes ------------------------------------------------


def _start_gateway(config: Settings, logs: Path) -> tuple[Service, str]:
    port = free_port()
    gateway = Service("services.gateway", service_env(replace(config, server_port=port)), logs)
    return gateway, f"http://127.0.0.1:{port}"


async def _wait_ready(gateway: Service, url: str) -> None:
    async def ready() -> bool:
        assert gateway.running(), gateway.output()[-3000:]
        try:
            async with httpx.AsyncClient(timeout=2) as http:
                return (await http.get(f"{url}/ready")).status_code == 200
        except httpx.HTTPError:
            return False

    await wait_until(ready, within=60, what="the gateway to be ready")


@contextlib.asynccontextmanager
async def _gateway(config: Settings, logs: Path):
    gateway, url = _start_gateway(config, logs)
    with gateway:
        await _wait_ready(gateway, url)
        yield gateway, url


async def _key(settings: Settings) -> tuple[Settings, uuid.UUID, str]:
    config = replace(settings, auth_mode="api_key", auth_cache_seconds=0.0)
    tenant = await add_tenant(config)
    return config, tenant, await add_key(config, tenant, "ingest", "query")


async def _stored(db: psycopg.Connection, config: Settings, count: int) -> None:
    await wait_until(
        lambda: row_count(db) == count and not pending_ids(config),
        within=90,
        what=f"{count} rows stored and nothing pending",
    )


def _stored_seqs(db: psycopg.Connection) -> list[int]:
    """metadata.seq of every stored row, in id order (the gateway's order of receipt)."""
    return [r[0] for r in db.execute("SELECT (metadata->>'seq')::int FROM log_entries ORDER BY id")]


# 100,000 records, as the issue asks: ~25 s on the shared 2-core machine.
RECORDS = 100_000


async def test_records_logged_while_the_gateway_answers_503_are_stored_once_in_order(
    settings, db, tmp_path, quiet_logger
) -> None:
    """overflow="block": a full queue holds the logging thread back until the gateway
    accepts again, so nothing is dropped, and the queue never grows past its bound."""
    records = RECORDS
    config, tenant, key = await _key(settings)
    # One shard, eight messages of backlog and no writer yet: the ninth batch is 503.
    # (Writers trim what they stored once a second: the backlog also paces the rest.)
    config = replace(config, stream_shards=1, stream_max_backlog=8, backpressure_retry_after=1)
    queue_records, queue_bytes = 5_000, 4 * 1024 * 1024
    async with _gateway(config, tmp_path) as (_, url):
        handler = MinisourceHandler(
            url,
            api_key=key,
            service_name="client-load",
            max_batch_records=1_000,
            max_queue_records=queue_records,
            max_queue_bytes=queue_bytes,
            overflow="block",
            flush_interval=0.2,
            flush_at_exit=False,
        )
        quiet_logger.addHandler(handler)
        # httpx logs each request of the sender: those lines reach the handler too, and
        # must neither be shipped nor wait for the handler's lock (held by the blocked
        # logging thread).
        httpx_logger = logging.getLogger("httpx")
        httpx_level = httpx_logger.level
        httpx_logger.setLevel(logging.INFO)
        httpx_logger.addHandler(handler)
        client = handler.client

        def log_all() -> None:
            for seq in range(records):
                quiet_logger.info("request %d handled", seq, extra={"seq": seq})

        producer = threading.Thread(target=log_all)
        producer.start()
        try:
            # Refused (503) at least once and blocked on a full queue: the bound holds.
            await wait_until(
                lambda: (
                    client.stats().retries >= 1 and client.stats().queue_records == queue_records
                ),
                within=60,
                what="the gateway to refuse and the queue to fill",
            )
            assert producer.is_alive()
            with Service("services.writer", service_env(config), tmp_path):
                await asyncio.to_thread(producer.join)
                assert await asyncio.to_thread(client.flush, 120)
                await _stored(db, config, records)
        finally:
            producer.join()
            httpx_logger.removeHandler(handler)
            httpx_logger.setLevel(httpx_level)
            handler.close()
    stats = client.stats()
    assert (stats.sent, stats.rejected, stats.dropped) == (records, 0, 0)
    assert stats.queue_records_high <= queue_records
    assert stats.queue_bytes_high <= queue_bytes
    assert stats.retries >= 1
    # Exactly once, and in order: the batches went one after another, each in order.
    assert _stored_seqs(db) == list(range(records))
    tenants = db.execute("SELECT DISTINCT tenant_id, service_name FROM log_entries").fetchall()
    assert tenants == [(tenant, "client-load")]


async def test_drop_new_drops_only_what_the_full_queue_refused(settings, db, tmp_path) -> None:
    """overflow="drop_new": log() never waits; what it refused is counted, everything
    it queued is stored once."""
    config, _, key = await _key(settings)
    config = replace(config, stream_shards=1, stream_max_backlog=1, backpressure_retry_after=1)
    async with _gateway(config, tmp_path) as (_, url):
        client = LogClient(
            url,
            key,
            service_name="client-drops",
            max_batch_records=500,
            max_queue_records=2_000,
            flush_interval=0.1,
            flush_at_exit=False,
        )
        queued: list[int] = []
        try:
            client.log(level="INFO", message="first", seq=-1)
            assert await asyncio.to_thread(client.flush, 30)  # the one message of backlog
            client.log(level="INFO", message="refused", seq=-2)
            await wait_until(lambda: client.stats().retries >= 1, within=30, what="a 503")
            queued = [s for s in range(10_000) if client.log(level="INFO", message="m", seq=s)]
            stats = client.stats()
            assert stats.dropped_queue_full == 10_000 - len(queued) > 0
            assert stats.queue_records_high <= 2_000
            with Service("services.writer", service_env(config), tmp_path):
                assert await asyncio.to_thread(client.flush, 60)
                await _stored(db, config, len(queued) + 2)
        finally:
            client.close()
    assert _stored_seqs(db) == [-1, -2, *queued]
    stats = client.stats()
    assert stats.sent == len(queued) + 2 and stats.rejected == 0


async def test_async_client_sends_gzip_and_counts_refused_entries(settings, db, tmp_path) -> None:
    config, _, key = await _key(settings)
    async with _gateway(config, tmp_path) as (_, url):
        with Service("services.writer", service_env(config), tmp_path):
            async with AsyncLogClient(
                url, key, service_name="client-async", environment="test", max_batch_records=300
            ) as client:
                # Blank: refused by the gateway alone, its batch is accepted.
                await client.log(level="INFO", message="   ", seq=-1)
                for seq in range(600):
                    assert await client.log(level="DEBUG", message=f"async {seq}", seq=seq)
                assert await client.flush(30)
                stats = client.stats()
            await _stored(db, config, 600)
    assert (stats.sent, stats.rejected, stats.batches_sent) == (600, 1, 3)
    assert _stored_seqs(db) == list(range(600))
    (environment,) = db.execute("SELECT DISTINCT environment FROM log_entries").fetchone()
    assert environment == "test"


_EXIT_SCRIPTS = {
    # The client's own atexit flush.
    "client": """
        from minisource_log_client import LogClient
        client = LogClient({url!r}, {key!r}, service_name="client-exit", flush_interval=60)
        for seq in range({count}):
            client.log(level="INFO", message=f"before exit {{seq}}", seq=seq)
    """,
    # The event loop is gone at exit: a short-lived LogClient sends what was queued.
    "async": """
        import asyncio
        from minisource_log_client import AsyncLogClient
        async def main():
            client = AsyncLogClient({url!r}, {key!r}, service_name="client-exit",
                                    flush_interval=60)
            for seq in range({count}):
                client.log_nowait(level="INFO", message=f"before exit {{seq}}", seq=seq)
        asyncio.run(main())
    """,
    # logging.shutdown closes the handler at exit, which flushes its client.
    "handler": """
        import logging
        from minisource_log_client import MinisourceHandler
        handler = MinisourceHandler({url!r}, api_key={key!r}, service_name="client-exit",
                                    flush_interval=60)
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
        for seq in range({count}):
            logging.info("before exit %d", seq, extra={{"seq": seq}})
    """,
}


@pytest.mark.parametrize("kind", sorted(_EXIT_SCRIPTS))
async def test_records_still_queued_at_exit_are_sent(settings, db, tmp_path, kind) -> None:
    """No flush(), no close(): the process just ends."""
    config, _, key = await _key(settings)
    async with _gateway(config, tmp_path) as (_, url):
        with Service("services.writer", service_env(config), tmp_path):
            script = textwrap.dedent(_EXIT_SCRIPTS[kind]).format(url=url, key=key, count=2_500)
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-c", script],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
            await _stored(db, config, 2_500)
    assert _stored_seqs(db) == list(range(2_500))
