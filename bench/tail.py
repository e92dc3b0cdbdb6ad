"""`make bench-tail`: what live tail costs ingest, and how fast it delivers.

1. Ingest cost. The writer's transaction (inbox claim, COPY, rollups, and the tail
   step: numbering the commit per tenant and recording its rows) is run directly on a
   fresh database with realistic rows (../shared/bench/gen_logs.py), WRITER_BATCH_ROWS
   (5,000) rows per transaction in 1,000-row messages of 10 tenants, alternating rounds
   with and without the tail step. Rows/s of each, from the same run.
2. Delivery. Real processes on a fresh database: an ingest gateway, a tail gateway,
   writer(s). CLIENTS SSE clients (in a child process) are spread over TENANTS tenants;
   this process sends RATE logs/s (batches of BATCH, each tenant in turn) for SECONDS.
   The first entry of every batch carries its send time; each client reports, for each
   such probe it receives, the delay from send to receipt (ingest -> writer -> COMMIT ->
   PUBLISH -> gateway -> SSE). The tail gateway's CPU and RSS are read from /proc.

    .venv/bin/python -m bench.tail [--rate 10000] [--clients 50] [--tenants 10] [--seconds 30]
    .venv/bin/python -m bench.tail --only cost|delivery

Figures, not asserts. Databases and keys made here are dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg

import services.writer.store as store
from bench.ingest import fresh_database
from services.gateway.ingest.ids import uuid7
from services.writer.__main__ import configure_connection
from services.writer.consumer import Delivery
from shared.model import IngestMessage, Level, LogRecord, StoredMessage
from shared.redis_conn import make_redis
from shared.redis_keys import RedisKeys
from shared.settings import Settings
from shared.streams import decode_message, encode_message
from shared.tail import encode_tail_message
from tests.datagen import load_gen_logs
from tests.processes import Service, free_port, service_env

PROBE = b'"message":"probe '
DROPPED = re.compile(rb'event: dropped\ndata: \{"reason":"(\w+)"')


def admin_settings() -> Settings:
    return replace(
        Settings.from_env(),
        postgres_user=os.environ.get("BENCH_POSTGRES_USER", "postgres"),
        auth_mode="trusted_header",
        log_level="warning",
    )


# 1. Ingest cost ----------------------------------------------------------------------


def _records(rows: int, seed: int) -> list[StoredMessage]:
    """Messages of 1,000 realistic rows, tenants in turn, timestamps of the last day."""
    entries = list(load_gen_logs().generate(rows, seed=seed, days=1, tenants=10))
    tenants = sorted({e["tenant_id"] for e in entries})
    now = datetime.now(UTC)
    messages = []
    for start in range(0, len(entries), 1000):
        records = []
        for e in entries[start : start + 1000]:
            metadata = e.get("metadata")
            records.append(
                LogRecord(
                    uuid7(),
                    datetime.fromisoformat(e["timestamp"]),
                    int(Level.parse(e["level"])),
                    e["service_name"],
                    e["message"],
                    e.get("trace_id"),
                    e.get("span_id"),
                    e.get("user_id"),
                    e.get("request_id"),
                    msgspec.json.encode(metadata) if metadata is not None else None,
                    e.get("source"),
                    e.get("host"),
                    e.get("environment"),
                )
            )
        tenant = uuid.UUID(tenants[(start // 1000) % len(tenants)])
        # As the writer reads it from the stream.
        messages.append(decode_message(encode_message(IngestMessage(tenant, now, records))))
    return messages


async def _no_tail(conn: Any, messages: Any) -> list[Any]:
    return []


async def measure_cost(admin: Settings, rows: int, rounds: int) -> dict[str, float]:
    """Rows/s with and without the tail step, and the tail step's share of the time of
    the transactions that include it (less sensitive to a busy machine than the A/B)."""
    original = store.record_tail_batches
    in_tail = 0.0

    async def with_tail(conn: Any, messages: Any) -> Any:
        nonlocal in_tail
        started = time.perf_counter()
        try:
            return await original(conn, messages)
        finally:
            in_tail += time.perf_counter() - started

    messages = _records(rows, seed=7)
    batch = 5  # messages of 1,000 rows per transaction: WRITER_BATCH_ROWS
    seconds = {"with tail": 0.0, "without tail": 0.0}
    stored = dict.fromkeys(seconds, 0)
    with fresh_database(admin, "tailcost") as settings:
        conn = await psycopg.AsyncConnection.connect(settings.postgres_conninfo())
        async with conn:
            await configure_connection(conn)
            days = store.partition_starts((r for m in messages for r in m.records), "day")
            await conn.set_autocommit(True)
            await store.ensure_partitions(conn, days)
            await conn.set_autocommit(False)
            serial = 0
            per_round = len(messages) // (rounds * 2)
            for round_ in range(rounds):
                # Alternate which goes first: the database grows as the run goes on.
                order = ("with tail", "without tail")
                for variant in order if round_ % 2 == 0 else order[::-1]:
                    store.record_tail_batches = with_tail if variant == "with tail" else _no_tail
                    part = messages[:per_round]
                    messages = messages[per_round:]
                    started = time.perf_counter()
                    for i in range(0, len(part), batch):
                        deliveries = []
                        for m in part[i : i + batch]:
                            serial += 1
                            deliveries.append(Delivery("bench", f"{serial}-0", b"", m))
                        await store.store_batch(conn, deliveries)
                    seconds[variant] += time.perf_counter() - started
                    stored[variant] += sum(len(m.records) for m in part)
                print(f"  round {round_ + 1}/{rounds} done", flush=True)
            cur = await conn.execute(
                "SELECT pg_total_relation_size('tail_batches'), sum(rows) FROM tail_batches"
            )
            size, rows_kept = await cur.fetchone() or (0, 0)
    store.record_tail_batches = original
    rates = {variant: stored[variant] / seconds[variant] for variant in seconds}
    rates["tail step share"] = in_tail / seconds["with tail"]
    rates["tail_batches bytes per row"] = size / rows_kept if rows_kept else 0.0
    return rates


# 2. Delivery -------------------------------------------------------------------------


@dataclass
class ProcStat:
    cpu_seconds: float
    rss_kib: int


def proc_stat(pid: int) -> ProcStat:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime
    rss = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return ProcStat(ticks / os.sysconf("SC_CLK_TCK"), rss)


async def _client(
    port: int, tenant: str, stop: dict[str, float], out: dict[str, Any], connected: asyncio.Event
) -> None:
    """A tail client that reads everything and parses only the probes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
    writer.write(
        f"GET /api/v1/logs/stream HTTP/1.1\r\nHost: x\r\nX-Tenant-ID: {tenant}\r\n\r\n".encode()
    )
    await writer.drain()
    leftover = await reader.readuntil(b"event: heartbeat")  # the stream's opening event
    out["connected"] += 1
    if out["connected"] == out["clients"]:
        connected.set()
    while time.time() < stop["at"]:
        try:
            async with asyncio.timeout(1.0):
                data = await reader.read(2**18)
        except TimeoutError:
            continue
        if not data:
            out["ended"] += 1
            break
        received = time.time_ns()
        buf = leftover + data
        out["events"] += buf.count(b"\nevent: log\n") - leftover.count(b"\nevent: log\n")
        for reason in DROPPED.findall(data):
            out["dropped"][reason.decode()] = out["dropped"].get(reason.decode(), 0) + 1
        position = 0
        while (found := buf.find(PROBE, position)) != -1:
            end = buf.find(b'"', found + len(PROBE))
            if end == -1:
                break
            out["probes"].append((received, int(buf[found + len(PROBE) : end])))
            position = end
        leftover = buf[max(position, len(buf) - len(PROBE)) :]
    writer.close()


async def _stop_time(stop: dict[str, float]) -> None:
    """The bench process writes when to stop once every helper is ready."""
    stop["at"] = float(await asyncio.to_thread(sys.stdin.readline))


async def run_clients(port: int, tenants: list[str], clients: int) -> None:
    out: dict[str, Any] = {
        "probes": [], "events": 0, "dropped": {}, "ended": 0, "connected": 0, "clients": clients
    }  # fmt: skip
    connected = asyncio.Event()
    stop = {"at": float("inf")}
    tasks = [
        asyncio.create_task(_client(port, tenants[i % len(tenants)], stop, out, connected))
        for i in range(clients)
    ]
    await connected.wait()
    print("connected", flush=True)  # the load starts once every client is streaming
    await _stop_time(stop)
    await asyncio.gather(*tasks)
    print(json.dumps(out))


def _body(tenant_entries: list[dict[str, Any]]) -> bytes:
    entries = [dict(tenant_entries[0], message=f"probe {time.time_ns()}"), *tenant_entries[1:]]
    return msgspec.json.encode({"entries": entries})


async def _send(
    http: httpx.AsyncClient, port: int, rate: int, batch: int, tenants: list[str], stop_at: float
) -> tuple[int, float]:
    """Batches at a steady `rate` until `stop_at`; (logs sent, logs/s achieved)."""
    pool = list(load_gen_logs().generate(batch * 20, seed=3, days=1, tenants=1))
    for e in pool:
        e.pop("tenant_id", None)
        e.pop("timestamp", None)
    interval = batch / rate
    sent, n = 0, 0
    began = next_at = time.monotonic()
    in_flight: set[asyncio.Task[None]] = set()

    async def post(tenant: str, body: bytes) -> None:
        response = await http.post(
            f"http://127.0.0.1:{port}/api/v1/logs/batch",
            content=body,
            headers={"X-Tenant-ID": tenant, "Content-Type": "application/json"},
        )
        response.raise_for_status()

    while time.time() < stop_at:
        start = (n * batch) % len(pool)
        chunk = (pool + pool)[start : start + batch]
        task = asyncio.create_task(post(tenants[n % len(tenants)], _body(chunk)))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        n += 1
        sent += batch
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    await asyncio.gather(*in_flight)
    return sent, sent / (time.monotonic() - began)


async def watch_publishes(settings: Settings) -> None:
    """When each probe's commit was published (what the tail gateways receive); run in
    a process of its own so that a busy load generator does not delay the timestamps."""
    published: dict[int, int] = {}
    redis = make_redis(settings, blocking=True)
    pubsub = redis.pubsub()
    stop = {"at": float("inf")}
    try:
        await pubsub.psubscribe(f"{settings.redis_key_prefix}:tail:*")
        print("connected", flush=True)
        stopping = asyncio.create_task(_stop_time(stop))
        while time.time() < stop["at"]:
            message = await pubsub.get_message(timeout=1.0)
            if message is None or message["type"] != "pmessage":
                continue
            at = time.time_ns()
            data: bytes = message["data"]
            position = 0
            while (found := data.find(b"probe ", position)) != -1:
                end = found + 6
                while end < len(data) and 48 <= data[end] <= 57:
                    end += 1
                published.setdefault(int(data[found + 6 : end]), at)
                position = end
        await stopping
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await redis.aclose()
    print(json.dumps(published))


async def _publish_direct(
    settings: Settings, rate: int, tenants: list[str], stop_at: float
) -> tuple[int, float]:
    """What writers publish at `rate` logs/s (one commit per tenant every 200 ms), without
    the ingest path: the tail gateways' own capacity. Returns (logs, logs/s)."""
    pool = _records(2_000, seed=5)[:2]
    rows = [r for m in pool for r in m.records]
    redis = make_redis(settings)
    keys = RedisKeys.from_settings(settings)
    per_commit = max(1, round(rate * 0.2 / len(tenants)))
    seqs = dict.fromkeys(tenants, 0)
    sent, began = 0, time.monotonic()
    next_at = began
    try:
        while time.time() < stop_at:
            async with redis.pipeline(transaction=False) as pipe:
                for tenant in tenants:
                    seqs[tenant] += 1
                    start = (sent % len(rows)) if rows else 0
                    records = (rows + rows)[start : start + per_commit]
                    records[0] = replace_record(records[0], f"probe {time.time_ns()}")
                    payload = encode_tail_message(uuid.UUID(tenant), seqs[tenant], records)
                    pipe.publish(keys.tail_channel(tenant), payload)
                    sent += per_commit
                await pipe.execute()
            next_at += 0.2
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    finally:
        await redis.aclose()
    return sent, sent / (time.monotonic() - began)


def replace_record(record: LogRecord, message: str) -> LogRecord:
    return msgspec.structs.replace(record, message=message)


@contextlib.asynccontextmanager
async def services(settings: Settings, writers: int, logs: Path) -> AsyncIterator[list[int]]:
    ports = [free_port(), free_port()]
    started = [
        Service("services.gateway", service_env(replace(settings, server_port=p)), logs)
        for p in ports
    ]
    started += [
        Service(
            "services.writer",
            service_env(settings, WRITER_NAME=f"bench-writer-{i}"),
            logs,
            name=f"writer-{i}",
        )
        for i in range(writers)
    ]
    try:
        async with httpx.AsyncClient() as http:
            for port in ports:
                for _ in range(600):
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(f"http://127.0.0.1:{port}/ready")).status_code == 200:
                            break
                    await asyncio.sleep(0.05)
        yield [*ports, started[1].pid]
    finally:
        for service in started:
            service.close()


async def _helper(role: str, arguments: list[Any]) -> asyncio.subprocess.Process:
    """This module in a process of its own, printing its result as JSON."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.tail",
        role,
        json.dumps(arguments),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


async def measure_delivery(admin: Settings, args: argparse.Namespace) -> dict[str, Any]:
    tenants = [str(uuid.uuid4()) for _ in range(args.tenants)]
    settings_for = replace(admin, tail_max_clients_per_tenant=max(100, args.clients))
    with fresh_database(settings_for, "tail") as settings:
        logs = Path(f"/tmp/bench-tail-{uuid.uuid4().hex[:6]}")
        async with services(settings, args.writers, logs) as (ingest_port, tail_port, tail_pid):
            warmup = 5.0
            # Two client processes, so that the clients keep up with what they receive.
            shares = (args.clients - args.clients // 2, args.clients // 2)
            workers = [
                await _helper("--clients-worker", [tail_port, tenants[w::2] or tenants, n])
                for w, n in enumerate(shares)
                if n
            ]
            watcher = await _helper("--publish-watcher", [settings.redis_key_prefix])
            for helper in [*workers, watcher]:
                assert helper.stdout is not None and helper.stdin is not None
                await helper.stdout.readline()  # "connected"
            stop_at = time.time() + warmup + args.seconds + 2
            for helper in [*workers, watcher]:
                assert helper.stdin is not None
                helper.stdin.write(f"{stop_at}\n".encode())
            async with httpx.AsyncClient(timeout=30) as http:
                sender = asyncio.create_task(
                    _publish_direct(settings, args.rate, tenants, stop_at - 2)
                    if args.direct
                    else _send(http, ingest_port, args.rate, args.batch, tenants, stop_at - 2)
                )
                await asyncio.sleep(warmup)
                measured_from = time.time()
                before, t0 = proc_stat(tail_pid), time.monotonic()
                rss_peak = before.rss_kib
                while time.monotonic() - t0 < args.seconds:
                    await asyncio.sleep(1.0)
                    rss_peak = max(rss_peak, proc_stat(tail_pid).rss_kib)
                after, elapsed = proc_stat(tail_pid), time.monotonic() - t0
                sent, achieved = await sender
            outputs = [json.loads((await w.communicate())[0]) for w in workers]
            assert all(out["connected"] == out["clients"] for out in outputs)
            watched, _ = await watcher.communicate()
        result: dict[str, Any] = {"probes": [], "events": 0, "dropped": {}, "ended": 0}
        for out in outputs:
            result["probes"] += out["probes"]
            result["events"] += out["events"]
            result["ended"] += out["ended"]
            for reason, count in out["dropped"].items():
                result["dropped"][reason] = result["dropped"].get(reason, 0) + count
        published = {int(k): v for k, v in json.loads(watched).items()}
    probes = [(at, sent) for at, sent in result["probes"] if at >= measured_from * 1e9]
    measured = sorted((at - sent) / 1e6 for at, sent in probes)
    hop = sorted((at - published[sent]) / 1e6 for at, sent in probes if sent in published)
    pipeline = sorted((published[sent] - sent) / 1e6 for _, sent in probes if sent in published)
    return {
        "sent_logs": sent,
        "offered_rate": args.rate,
        "achieved_rate": round(achieved),
        "events_delivered": result["events"],
        "dropped_events": result["dropped"],
        "streams_ended": result["ended"],
        "probes": len(measured),
        "ingest_to_sse_ms": _percentiles(measured),
        "ingest_to_publish_ms": _percentiles(pipeline),
        "publish_to_sse_ms": _percentiles(hop),
        "tail_gateway_cpu_percent": 100 * (after.cpu_seconds - before.cpu_seconds) / elapsed,
        "tail_gateway_rss_mib": {"start": before.rss_kib / 1024, "peak": rss_peak / 1024},
    }


def _percentiles(values: list[float]) -> dict[str, float] | None:
    if len(values) < 2:
        return None
    q = statistics.quantiles(values, n=100)
    return {"p50": round(q[49], 1), "p99": round(q[98], 1), "max": round(max(values), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else "")
    parser.add_argument("--only", choices=("cost", "delivery"))
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--writers", type=int, default=1)
    parser.add_argument("--cost-rows", type=int, default=200_000)
    parser.add_argument(
        "--direct",
        action="store_true",
        help="publish commits straight to the tail channels (the tail gateway's capacity, "
        "without ingest, writer and PostgreSQL)",
    )
    parser.add_argument("--clients-worker", help=argparse.SUPPRESS)
    parser.add_argument("--publish-watcher", help=argparse.SUPPRESS)
    args = parser.parse_args()
    admin = admin_settings()
    if args.clients_worker:
        port, tenants, clients = json.loads(args.clients_worker)
        asyncio.run(run_clients(port, tenants, clients))
        return
    if args.publish_watcher:
        (prefix,) = json.loads(args.publish_watcher)
        asyncio.run(watch_publishes(replace(admin, redis_key_prefix=prefix)))
        return
    if args.only in (None, "cost"):
        print(f"ingest cost: {args.cost_rows} rows per variant, 5,000-row transactions")
        rates = asyncio.run(measure_cost(admin, args.cost_rows * 2, rounds=4))
        for variant in ("with tail", "without tail"):
            print(f"  {variant:>12}: {rates[variant]:,.0f} rows/s")
        print(f"  with/without: {rates['with tail'] / rates['without tail']:.3f}")
        print(f"  tail step: {100 * rates['tail step share']:.1f}% of the transactions' time")
        print(f"  tail_batches: {rates['tail_batches bytes per row']:.1f} bytes per row kept")
    if args.only in (None, "delivery"):
        how = (
            "published straight to the tail channels"
            if args.direct
            else f"through HTTP ingest, batches of {args.batch}, {args.writers} writer(s)"
        )
        print(
            f"delivery: {args.rate} logs/s for {args.seconds:.0f}s (+5s warm-up), "
            f"{args.clients} clients over {args.tenants} tenants, {how}"
        )
        figures = asyncio.run(measure_delivery(admin, args))
        for name, value in figures.items():
            print(f"  {name}: {value}")


if __name__ == "__main__":
    main()
