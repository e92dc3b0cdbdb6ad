"""`make bench-protocols`: ingest through each protocol against the native batch API, with
the same rows in the same run.

The rows are `make bench-ingest`'s (../shared/bench/gen_logs.py, 10 tenants, stamped over
the 30 seconds before the run), in batches of 1,000, one tenant per batch; each protocol
in PROTOCOLS encodes every batch its own way (its body builder) before the clock starts.
For each protocol, a fresh database gets real gateway, writer and janitor subprocesses
(bench/ingest.py's `pipeline`), four HTTP clients send the bodies, and the clock stops
when every row is committed. The native path runs first and last; each protocol is
compared with the mean of the two.

Then the CPU each decoder costs in the gateway, in this process over the same bodies:
decode + translate to entries (what differs between the routes; validation, the stream
message and HTTP are the same for all), in µs per row. The gateway's whole CPU per row
in the end-to-end runs (from /proc) is printed too.

Another protocol adds itself to PROTOCOLS: a path, a Content-Type, a body builder (a
batch of gen_logs entries → request body), the status that means accepted, and its
decoder (a body → its entries, as the gateway decodes and translates it).

    .venv/bin/python -m bench.protocols [--rows 200000] [--clients 4] [--only NAME,...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from bench.ingest import (
    BATCH,
    DEFAULT_SPREAD_SECONDS,
    Variant,
    committed_rows,
    cpu_used,
    fresh_database,
    pipeline,
)
from services.gateway.ingest.compression import snappy_block
from services.gateway.ingest.decoding import decode_batch_body
from services.gateway.ingest.validation import Limits
from services.gateway.loki.decoding import decode_protobuf
from services.gateway.loki.labels import LabelMapping
from services.gateway.loki.translate import Translator
from services.gateway.ndjson.accept import entries_of
from services.gateway.ndjson.mapping import FieldNames
from services.gateway.ndjson.records import read_records
from services.gateway.otlp.decoding import from_protobuf, parse_protobuf
from services.gateway.otlp.mapping import entry_of, origin_of, time_of
from shared.settings import Settings
from tests.datagen import load_gen_logs
from tests.loki_client import protobuf_body as loki_protobuf_body

Entry = dict[str, Any]


@dataclass(frozen=True)
class Protocol:
    path: str
    content_type: str
    build: Callable[[list[Entry]], bytes]  # a batch of gen_logs entries → the body
    accepted: int  # the status of success
    decode: Callable[[bytes, Limits], list[Any]]  # a body → its entries, as the gateway does
    end_to_end: bool = True  # False: measured in-process only


# -- Native JSON. -----------------------------------------------------------------------


def native_body(entries: list[Entry]) -> bytes:
    return msgspec.json.encode({"entries": entries})


def native_decode(body: bytes, limits: Limits) -> list[Any]:
    return decode_batch_body(body, 1_000_000)


# -- OTLP protobuf. ---------------------------------------------------------------------

_SEVERITY = {"DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17, "FATAL": 21}


def _any(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=str(value))


def otlp_request(entries: list[Entry]) -> Any:
    """The entries as an SDK or Collector sends them: one resource per (service, host,
    environment), the rest on the record (gen_logs gives nearly every entry its own
    resource: ~800 per 1,000, the costly case; an SDK sends one per export)."""
    by_resource: dict[tuple[str, str, str], list[Entry]] = defaultdict(list)
    for entry in entries:
        by_resource[(entry["service_name"], entry["host"], entry["environment"])].append(entry)
    request = ExportLogsServiceRequest()
    for (service, host, environment), grouped in by_resource.items():
        resource_logs = request.resource_logs.add()
        resource_logs.resource.attributes.extend(
            KeyValue(key=k, value=_any(v))
            for k, v in (
                ("service.name", service),
                ("host.name", host),
                ("deployment.environment.name", environment),
            )
        )
        records = resource_logs.scope_logs.add().log_records
        for entry in grouped:
            record = records.add()
            stamp = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00"))
            record.time_unix_nano = int(stamp.timestamp() * 1_000_000) * 1000
            record.severity_number = _SEVERITY[entry["level"]]  # type: ignore[assignment]
            record.severity_text = entry["level"]
            record.body.string_value = entry["message"]
            record.trace_id = bytes.fromhex(entry["trace_id"])
            record.span_id = bytes.fromhex(entry["span_id"])
            path, _, line = entry["source"].rpartition(":")
            attributes = {
                "code.filepath": path,
                "code.lineno": int(line),
                "user.id": entry["user_id"],
                "request.id": entry["request_id"],
                **entry["metadata"],
            }
            record.attributes.extend(KeyValue(key=k, value=_any(v)) for k, v in attributes.items())
    return request


def otlp_body(entries: list[Entry]) -> bytes:
    return bytes(otlp_request(entries).SerializeToString())


def otlp_decode(body: bytes, limits: Limits) -> list[Any]:
    return from_protobuf(parse_protobuf(body), limits).entries


def _generated_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_generated_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _generated_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


_GENERATED_ORIGINS: dict[tuple[bytes, str], Any] = {}


def otlp_generated_decode(body: bytes, limits: Limits) -> list[Any]:
    """The same translation over opentelemetry-proto's generated classes: what the C
    reader (services/gateway/wire/) is measured against."""
    out = []
    for resource_logs in ExportLogsServiceRequest.FromString(body).resource_logs:
        # Origins cached as the gateway caches them (by the resource's bytes).
        key = resource_logs.resource.SerializeToString()
        for scope_logs in resource_logs.scope_logs:
            origin = _GENERATED_ORIGINS.get((key, scope_logs.scope.name))
            if origin is None:
                resource = {
                    kv.key: _generated_value(kv.value) for kv in resource_logs.resource.attributes
                }
                origin = origin_of(resource, scope_logs.scope.name)
                _GENERATED_ORIGINS[(key, scope_logs.scope.name)] = origin
            for record in scope_logs.log_records:
                out.append(
                    entry_of(
                        origin,
                        {kv.key: _generated_value(kv.value) for kv in record.attributes},
                        timestamp=time_of(record.time_unix_nano, record.observed_time_unix_nano),
                        severity_number=record.severity_number,
                        severity_text=record.severity_text,
                        body=_generated_value(record.body),
                        trace_id=record.trace_id.hex() or None,
                        span_id=record.span_id.hex() or None,
                        event_name=record.event_name,
                        dropped=record.dropped_attributes_count,
                        limits=limits,
                        size_hint=record.ByteSize() - record.body.ByteSize(),
                    )
                )
    return out


# -- Loki push protobuf (Promtail, Alloy). ----------------------------------------------


def loki_body(entries: list[Entry]) -> bytes:
    """A snappy-compressed PushRequest as Promtail or Alloy sends it: one stream per
    (service, environment, level) label set; what has too many values to be a label (the
    host: gen_logs gives nearly every entry its own), the ids, source and metadata as
    structured metadata (Loki's values are strings)."""
    streams: dict[str, list[Any]] = defaultdict(list)
    for entry in entries:
        labels = (
            f'{{service_name="{entry["service_name"]}", environment="{entry["environment"]}", '
            f'level="{entry["level"].lower()}"}}'
        )
        stamp = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00"))
        structured = {
            name: str(entry[name])
            for name in ("host", "trace_id", "span_id", "user_id", "request_id")
        }
        structured["source"] = entry["source"]
        structured.update({k: str(v) for k, v in entry["metadata"].items()})
        nanos = int(stamp.timestamp() * 1_000_000) * 1000
        streams[labels].append((nanos, entry["message"], structured))
    return loki_protobuf_body(list(streams.items()))


def loki_decode(body: bytes, limits: Limits) -> list[Any]:
    push = decode_protobuf(snappy_block(body, 1 << 30))
    mapping = LabelMapping(service=("service_name", "service", "app", "job"))
    translator = Translator(mapping, may_hold_nul=push.may_hold_nul)
    push.translate(translator)
    return translator.out.entries


# -- NDJSON (Fluent Bit json_lines, Vector), with renamed fields. -----------------------

NDJSON_FIELDS = "_msg_field=log&_time_field=date&_service_field=app"


def ndjson_body(entries: list[Entry]) -> bytes:
    """One line per entry in Fluent Bit's names: the message in `log`, the time in
    `date` (epoch seconds, a float), the service in `app`."""
    lines = []
    for entry in entries:
        record = dict(entry)
        record["log"] = record.pop("message")
        record["app"] = record.pop("service_name")
        stamp = datetime.fromisoformat(record.pop("timestamp").replace("Z", "+00:00"))
        record["date"] = stamp.timestamp()
        lines.append(msgspec.json.encode(record))
    return b"\n".join(lines) + b"\n"


def ndjson_decode(body: bytes, limits: Limits) -> list[Any]:
    names = FieldNames(message=("log",), time=("date",), service=("app",))
    return entries_of(read_records(body), names)


NATIVE = "native JSON"
PROTOCOLS: dict[str, Protocol] = {
    NATIVE: Protocol("/api/v1/logs/batch", "application/json", native_body, 202, native_decode),
    "OTLP protobuf": Protocol("/v1/logs", "application/x-protobuf", otlp_body, 200, otlp_decode),
    "OTLP protobuf (generated classes)": Protocol(
        "/v1/logs",
        "application/x-protobuf",
        otlp_body,
        200,
        otlp_generated_decode,
        end_to_end=False,
    ),
    "Loki push protobuf": Protocol(
        "/loki/api/v1/push", "application/x-protobuf", loki_body, 204, loki_decode
    ),
    "NDJSON": Protocol(
        f"/api/v1/logs/ndjson?{NDJSON_FIELDS}",
        "application/x-ndjson",
        ndjson_body,
        202,
        ndjson_decode,
    ),
}


# -- Running. ---------------------------------------------------------------------------


@dataclass
class Batches:
    """The rows, one tenant and one list of entries per batch."""

    tenants: list[uuid.UUID]
    entries: list[list[Entry]]

    @property
    def rows(self) -> int:
        return sum(map(len, self.entries))


def make_batches(rows: int, seed: int, spread_seconds: float) -> Batches:
    generated = list(
        load_gen_logs().generate(rows, seed=seed, days=spread_seconds / 86_400, tenants=10)
    )
    tenants = sorted({e["tenant_id"] for e in generated})
    out = Batches([], [])
    for start in range(0, rows - rows % BATCH, BATCH):
        chunk = generated[start : start + BATCH]
        for entry in chunk:
            del entry["tenant_id"]
        out.tenants.append(uuid.UUID(tenants[(start // BATCH) % len(tenants)]))
        out.entries.append(chunk)
    return out


@dataclass
class Run:
    rate: float  # rows/s, first request to every row committed
    gateway_us: float  # the gateway process's CPU per row


async def _send(
    url: str, protocol: Protocol, bodies: list[tuple[uuid.UUID, bytes]], clients: int
) -> None:
    queue = iter(bodies)

    async def client(http: httpx.AsyncClient) -> None:
        for tenant, body in queue:
            headers = {"X-Tenant-ID": str(tenant), "Content-Type": protocol.content_type}
            while True:
                response = await http.post(url + protocol.path, content=body, headers=headers)
                if response.status_code == protocol.accepted:
                    break
                if response.status_code not in (429, 503):
                    raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
                await asyncio.sleep(0.05)  # backpressure: wait and retry, as agents do

    async with httpx.AsyncClient(timeout=120) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))


def end_to_end(
    admin: Settings, protocol: Protocol, bodies: list[tuple[uuid.UUID, bytes]], rows: int,
    clients: int, logs: Path,
) -> Run:  # fmt: skip
    variant = Variant(writers=1, batch_rows=5000, gateways=1)
    with (
        fresh_database(admin, "proto") as settings,
        pipeline(settings, variant, logs) as running,
        psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn,
    ):
        before = running.cpu(conn, settings.postgres_db)
        started = time.perf_counter()
        asyncio.run(_send(running.urls[0], protocol, bodies, clients))
        while committed_rows(conn) < rows:
            time.sleep(0.02)  # commits announce nothing: poll the inbox
        elapsed = time.perf_counter() - started
        cpu = cpu_used(before, running.cpu(conn, settings.postgres_db))
        stored = conn.execute("SELECT count(*) FROM log_entries").fetchone()
    assert stored == (rows,), stored
    return Run(rows / elapsed, cpu["gateway"] * 1e6 / rows)


def decoder_cpu(protocol: Protocol, bodies: list[bytes], rows: int, limits: Limits) -> float:
    """CPU µs per row of the protocol's decode + translate, best of three passes."""
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        decoded = sum(len(protocol.decode(body, limits)) for body in bodies)
        best = min(best, time.process_time() - started)
        assert decoded == rows, (decoded, rows)
    return best * 1e6 / rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--only", default="", help="protocol names, comma-separated")
    args = parser.parse_args()
    chosen = [NATIVE, *(n for n in PROTOCOLS if n != NATIVE)]
    if args.only:
        wanted = {n.strip() for n in args.only.split(",")}
        chosen = [n for n in chosen if n == NATIVE or n in wanted]

    admin = replace(
        Settings.from_env(),
        postgres_user=os.environ.get("BENCH_POSTGRES_USER", "postgres"),
        auth_mode="trusted_header",
        log_level="warning",
    )
    limits = Limits.from_settings(admin)
    print(f"generating {args.rows} rows ...", flush=True)
    batches = make_batches(args.rows, args.seed, DEFAULT_SPREAD_SECONDS)
    bodies = {
        name: [PROTOCOLS[name].build(entries) for entries in batches.entries] for name in chosen
    }
    for name in chosen:
        size = sum(map(len, bodies[name])) / 1e6
        print(f"{name}: {len(bodies[name])} bodies, {size:.0f} MB", flush=True)

    logs = Path(tempfile.mkdtemp(prefix="mlog-bench-protocols-"))
    runs: dict[str, list[Run]] = defaultdict(list)
    order = [n for n in chosen if PROTOCOLS[n].end_to_end] + [NATIVE]
    for name in order:
        sent = list(zip(batches.tenants, bodies[name], strict=True))
        try:
            run = end_to_end(admin, PROTOCOLS[name], sent, batches.rows, args.clients, logs)
        except Exception as exc:  # one broken protocol does not void the others' figures
            print(f"{name}: failed end to end: {exc!r}", flush=True)
            continue
        runs[name].append(run)
        print(
            f"{name}: {run.rate:,.0f} rows/s end to end, gateway CPU {run.gateway_us:.1f} us/row",
            flush=True,
        )

    decoders: dict[str, float | None] = {}
    for name in chosen:
        try:
            decoders[name] = decoder_cpu(PROTOCOLS[name], bodies[name], batches.rows, limits)
        except Exception as exc:
            print(f"{name}: decoder failed: {exc!r}", flush=True)
            decoders[name] = None
    baseline = statistics.fmean(r.rate for r in runs[NATIVE])
    print(
        f"\nnative baseline: {baseline:,.0f} rows/s "
        f"(runs: {', '.join(f'{r.rate:,.0f}' for r in runs[NATIVE])})"
    )
    print(
        "| protocol | end to end rows/s | of native | gateway CPU µs/row "
        "| decode + translate µs/row |"
    )
    print("| --- | --- | --- | --- | --- |")
    for name in chosen:
        cpu = decoders[name]
        decode = "failed" if cpu is None else f"{cpu:.1f}"
        if not runs.get(name):
            print(f"| {name} | - | - | - | {decode} |")
            continue
        rate = statistics.fmean(r.rate for r in runs[name])
        gateway = statistics.fmean(r.gateway_us for r in runs[name])
        print(f"| {name} | {rate:,.0f} | {rate / baseline:.0%} | {gateway:.1f} | {decode} |")
    print(f"(service logs in {logs})")


if __name__ == "__main__":
    main()
