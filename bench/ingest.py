"""`make bench-ingest`: sustained end-to-end ingest against raw COPY, measured in one run.

For each variant (writer processes x WRITER_BATCH_ROWS x gateway processes) a fresh
database and key prefix get real gateway, writer and janitor subprocesses; concurrent
HTTP clients in this process send pre-encoded batches of 1,000 realistic entries
(../shared/bench/gen_logs.py, stamped over the 30 seconds before the run) and the clock
stops when every row is committed, checked by count. The baseline is raw COPY of the
same rows into the same schema (a fresh database) from one process, and the same into
a log_entries without any index (before and after the variants). Then, at half the
best rate, every batch's accepted→committed lag is measured: each request has its own
tenant, so the writer's inbox row (visible at COMMIT) tells when its batch was stored.
Figures, not asserts. Databases and keys made here are dropped afterwards. With
VICTORIALOGS_BIN set, the same entries go into a fresh VictoriaLogs too, in batches of
1,000 and of 100 (bench/victorialogs.py).

    .venv/bin/python -m bench.ingest [--rows 300000] [--clients 4] [--batch 1000]
                                     [--spread-seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Collection, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg
from psycopg import sql
from redis import Redis

from bench import victorialogs
from services.gateway.ingest.ids import uuid7
from shared.migrate import migrate
from shared.model import Level
from shared.settings import Settings
from tests.conftest import drop_keys
from tests.datagen import load_gen_logs
from tests.processes import Service, free_port, service_env

BATCH = 1000
# A live stream's entries are stamped moments before they are sent: by default the rows
# are stamped over the 30 seconds before the run, so they arrive for minutes the janitor
# has not compacted yet (shared/compaction.py). `--spread-seconds 600` stamps them up to
# 10 minutes back, which sends most through the writer's late path (hourly and daily
# upserts per batch).
DEFAULT_SPREAD_SECONDS = 30.0
COPY_COLUMNS = (
    'id, tenant_id, "timestamp", level, service_name, message, trace_id, span_id, user_id, '
    "request_id, metadata, source, host, environment"
)
_TEXT_FIELDS = ("service_name", "message", "trace_id", "span_id", "user_id", "request_id")
_TAIL_FIELDS = ("source", "host", "environment")


@dataclass(frozen=True)
class Variant:
    writers: int
    batch_rows: int
    gateways: int

    def __str__(self) -> str:
        return (
            f"{self.writers} writer process(es), WRITER_BATCH_ROWS={self.batch_rows}, "
            f"{self.gateways} gateway process(es)"
        )


@dataclass
class Workload:
    """The same rows, as HTTP bodies (one tenant per batch) and as COPY text."""

    bodies: list[tuple[uuid.UUID, bytes]]
    copy_text: bytes
    batch: int = BATCH  # entries per body

    @property
    def rows(self) -> int:
        return len(self.bodies) * self.batch


def _copy_field(value: Any) -> str:
    if value is None:
        return "\\N"
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def make_workload(
    rows: int, seed: int, spread_seconds: float = DEFAULT_SPREAD_SECONDS, batch: int = BATCH
) -> Workload:
    days = spread_seconds / 86_400
    entries = list(load_gen_logs().generate(rows, seed=seed, days=days, tenants=10))
    tenants = sorted({e["tenant_id"] for e in entries})
    bodies = []
    copy_lines = io.StringIO()
    for start in range(0, rows - rows % batch, batch):
        chunk = entries[start : start + batch]
        tenant = uuid.UUID(tenants[(start // batch) % len(tenants)])
        for entry in chunk:
            del entry["tenant_id"]
            fields = [
                str(uuid7()),
                str(tenant),
                entry["timestamp"],
                str(int(Level.parse(entry["level"]))),
            ]
            fields += [_copy_field(entry.get(name)) for name in _TEXT_FIELDS]
            fields.append(_copy_field(entry.get("metadata")))
            fields += [_copy_field(entry.get(name)) for name in _TAIL_FIELDS]
            copy_lines.write("\t".join(fields) + "\n")
        bodies.append((tenant, msgspec.json.encode({"entries": chunk})))
    return Workload(bodies, copy_lines.getvalue().encode(), batch)


@contextlib.contextmanager
def fresh_database(admin: Settings, label: str) -> Iterator[Settings]:
    """A new, migrated database and Redis key prefix; both removed afterwards."""
    suffix = uuid.uuid4().hex[:8]
    settings = replace(
        admin, postgres_db=f"mlog_bench_{label}_{suffix}", redis_key_prefix=f"bench-{suffix}"
    )
    name = sql.Identifier(settings.postgres_db)
    with psycopg.connect(admin.postgres_conninfo(dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    try:
        migrate(settings)
        with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
            # The rows span the last day: both sides start with its partitions in place.
            conn.execute("SELECT ensure_log_partition(now() - interval '1 day')")
        yield settings
    finally:
        with psycopg.connect(admin.postgres_conninfo(dbname="postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        drop_keys(settings)


@dataclass
class Copied:
    rate: float  # rows/s
    postgres_us_per_row: float  # CPU of the PostgreSQL backend doing the COPY


def log_entries_indexes(conn: psycopg.Connection) -> list[str]:
    """The indexes declared on log_entries (each partition gets its own copy)."""
    rows = conn.execute(
        "SELECT indexrelid::regclass::text FROM pg_index "
        "WHERE indrelid = 'log_entries'::regclass ORDER BY 1"
    ).fetchall()
    return [str(index) for (index,) in rows]


def raw_copy(admin: Settings, workload: Workload, *, keep: Collection[str] | None = None) -> Copied:
    """Rows per second of one COPY of all rows (pre-formatted text) in one transaction;
    `keep`: only these of log_entries' indexes (none: the heap's own limit on this
    machine), every one by default."""
    with (
        fresh_database(admin, "copy") as settings,
        psycopg.connect(settings.postgres_conninfo()) as conn,
    ):
        if keep is not None:
            for index in log_entries_indexes(conn):
                if index not in keep:
                    conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(index)))
            conn.commit()
        data = workload.copy_text
        backend_cpu = cpu_seconds(conn.info.backend_pid)
        started = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy(f"COPY log_entries ({COPY_COLUMNS}) FROM STDIN") as copy,
        ):
            for offset in range(0, len(data), 1 << 20):
                copy.write(data[offset : offset + (1 << 20)])
        conn.commit()
        elapsed = time.perf_counter() - started
        backend_cpu = cpu_seconds(conn.info.backend_pid) - backend_cpu
        stored = conn.execute("SELECT count(*) FROM log_entries").fetchone()
    assert stored == (workload.rows,), stored
    return Copied(workload.rows / elapsed, backend_cpu * 1e6 / workload.rows)


def committed_rows(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT coalesce(sum(rows), 0) FROM ingest_inbox").fetchone()
    return int(row[0]) if row else 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Running:
    """A started pipeline: where to send, and which processes do the work."""

    urls: list[str]
    gateways: list[int]
    writers: list[int]
    janitor: int
    redis: int

    def cpu(self, conn: psycopg.Connection, database: str) -> dict[str, dict[int, float]]:
        """CPU seconds used so far, per component and process. PostgreSQL is the backends
        serving the database (the services' connections and this process's poller)."""
        backends = [
            r[0]
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)
            )
        ]
        groups = {
            "gateway": self.gateways,
            "writer": self.writers,
            "janitor": [self.janitor],
            "PostgreSQL": backends,
            "Redis": [self.redis],
            "bench client": [os.getpid()],
        }
        return {name: {pid: cpu_seconds(pid) for pid in pids} for name, pids in groups.items()}


def cpu_used(
    before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]
) -> dict[str, float]:
    """CPU seconds per component between two snapshots (a process new since `before`
    counts from zero)."""
    return {
        name: sum(t - before[name].get(pid, 0.0) for pid, t in after[name].items())
        for name in after
    }


@contextlib.contextmanager
def pipeline(
    settings: Settings, variant: Variant, logs: Path, env: dict[str, str] | None = None
) -> Iterator[Running]:
    """Gateway and writer subprocesses, yielded once the gateways are ready; `env` adds
    variables to every process's environment (bench/tracing.py: the OTEL_* ones)."""
    extra = env or {}
    ports = [free_port() for _ in range(variant.gateways)]
    config = replace(settings, writer_batch_rows=variant.batch_rows)
    services = [
        Service(
            "services.writer",
            service_env(replace(config, writer_name=f"bench-w{i}"), **extra),
            logs,
        )
        for i in range(variant.writers)
    ]
    services += [
        Service("services.gateway", service_env(replace(config, server_port=p), **extra), logs)
        for p in ports
    ]
    # The janitor compacts the rollups while the rows arrive, as in production.
    services.append(Service("services.janitor", service_env(config, **extra), logs))
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    try:
        for url in urls:
            _wait_ready(url)
        with contextlib.closing(
            Redis(host=settings.redis_host, port=settings.redis_port, db=settings.redis_db)
        ) as redis:
            redis_pid = int(redis.info("server")["process_id"])
        yield Running(
            urls,
            gateways=[s.pid for s in services if s.module == "services.gateway"],
            writers=[s.pid for s in services if s.module == "services.writer"],
            janitor=next(s.pid for s in services if s.module == "services.janitor"),
            redis=redis_pid,
        )
    finally:
        for service in services:
            service.close()


def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"gateway {url} not ready")


async def _post(http: httpx.AsyncClient, url: str, tenant: uuid.UUID, body: bytes) -> float:
    """POST until accepted (backpressure answers 503: wait and retry); the time of the 202."""
    headers = {"X-Tenant-ID": str(tenant), "Content-Type": "application/json"}
    while True:
        response = await http.post(f"{url}/api/v1/logs/batch", content=body, headers=headers)
        if response.status_code == 202:
            return time.perf_counter()
        if response.status_code != 503:
            raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
        await asyncio.sleep(0.05)


@dataclass
class Throughput:
    end_to_end: float  # rows/s from the first request until every row is committed
    accepted: float  # rows/s from the first request until the last 202
    cpu: dict[str, float]  # CPU seconds per component over the whole run


async def max_rate(
    settings: Settings, running: Running, workload: Workload, clients: int
) -> Throughput:
    queue = iter(workload.bodies)
    targets = itertools.cycle(running.urls)

    async def client(http: httpx.AsyncClient) -> None:
        for tenant, body in queue:
            await _post(http, next(targets), tenant, body)

    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        cpu_before = running.cpu(conn, settings.postgres_db)
        async with httpx.AsyncClient(timeout=120) as http:
            started = time.perf_counter()
            await asyncio.gather(*(client(http) for _ in range(clients)))
            accepted_at = time.perf_counter()
        await _until_committed(conn, workload.rows)
        done = time.perf_counter()
        cpu = cpu_used(cpu_before, running.cpu(conn, settings.postgres_db))
        stored = conn.execute("SELECT count(*), count(DISTINCT id) FROM log_entries").fetchone()
    assert stored == (workload.rows, workload.rows), stored
    return Throughput(
        workload.rows / (done - started), workload.rows / (accepted_at - started), cpu
    )


async def _until_committed(conn: psycopg.Connection, rows: int) -> None:
    # Commits announce nothing: poll the inbox (one row per stored batch), 50 times a second.
    while True:
        if committed_rows(conn) >= rows:
            return
        await asyncio.sleep(0.02)


async def lag_at(
    settings: Settings, url: str, workload: Workload, rows_per_second: float, seconds: float
) -> list[float]:
    """Accepted→committed lag of every batch sent at a steady `rows_per_second`."""
    interval = workload.batch / rows_per_second
    count = max(10, int(seconds / interval))
    bodies = list(itertools.islice(itertools.cycle(workload.bodies), count))
    accepted: dict[uuid.UUID, float] = {}
    committed: dict[uuid.UUID, float] = {}
    sending = True

    async def watch(conn: psycopg.AsyncConnection) -> None:
        while sending or len(committed) < len(accepted):
            waiting = [t for t in accepted if t not in committed]
            if waiting:
                cur = await conn.execute(
                    "SELECT tenant_id FROM ingest_inbox WHERE tenant_id = ANY(%s)", (waiting,)
                )
                now = time.perf_counter()
                for (tenant,) in await cur.fetchall():
                    committed.setdefault(tenant, now)
            await asyncio.sleep(0.005)

    async def send_one(http: httpx.AsyncClient, body: bytes) -> None:
        tenant = uuid.uuid4()  # one tenant per batch: its inbox row marks its commit
        accepted[tenant] = await _post(http, url, tenant, body)

    conn = await psycopg.AsyncConnection.connect(settings.postgres_conninfo(), autocommit=True)
    async with conn, httpx.AsyncClient(timeout=60) as http:
        watcher = asyncio.create_task(watch(conn))
        tasks = []
        started = time.perf_counter()
        for i, (_, body) in enumerate(bodies):
            await asyncio.sleep(max(0.0, started + i * interval - time.perf_counter()))
            tasks.append(asyncio.create_task(send_one(http, body)))
        await asyncio.gather(*tasks)
        sending = False
        await asyncio.wait_for(watcher, timeout=120)
    return sorted(committed[t] - accepted[t] for t in accepted)


def percentile(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=300_000, help="rows per measurement")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    parser.add_argument("--lag-seconds", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--batch", type=int, default=BATCH, help="entries per request")
    parser.add_argument(
        "--spread-seconds",
        type=float,
        default=DEFAULT_SPREAD_SECONDS,
        help="stamp the rows over this many seconds before the run",
    )
    parser.add_argument(
        "--index-costs",
        action="store_true",
        help="only what each index of log_entries costs a raw COPY, then exit",
    )
    parser.add_argument(
        "--variants",
        default="1x5000x1,2x5000x1,1x20000x1,1x5000x2",
        help="writers x WRITER_BATCH_ROWS x gateways, comma-separated",
    )
    args = parser.parse_args()
    variants = [Variant(*(int(x) for x in v.split("x"))) for v in args.variants.split(",")]

    admin = replace(
        Settings.from_env(),
        postgres_user=os.environ.get("BENCH_POSTGRES_USER", "postgres"),
        auth_mode="trusted_header",
        log_level="warning",
    )
    print(f"generating {args.rows} rows ...", flush=True)
    workload = make_workload(args.rows, args.seed, args.spread_seconds, args.batch)
    body_mb = sum(len(b) for _, b in workload.bodies) / 1e6
    print(f"{workload.rows} rows in batches of {workload.batch} ({body_mb:.0f} MB of JSON)")

    if args.index_costs:
        index_costs(admin, workload)
        return

    # The machine's load drifts (other work may share its 2 cores): raw COPY is measured
    # before and after every variant, and each variant is compared with the mean of the two
    # measured around it.
    logs = Path(tempfile.mkdtemp(prefix="mlog-bench-"))
    # Issue 21's yardstick: the same COPY into a log_entries without indexes, before and
    # after the variants.
    bare = [raw_copy(admin, workload, keep=())]
    print(f"raw COPY without indexes: {bare[-1].rate:,.0f} rows/s", flush=True)
    copies = [raw_copy(admin, workload)]
    print(f"raw COPY, one process: {copies[-1].rate:,.0f} rows/s", flush=True)
    results: list[tuple[Variant, Throughput, float]] = []
    for variant in variants:
        with fresh_database(admin, "e2e") as settings, pipeline(settings, variant, logs) as run:
            measured = asyncio.run(max_rate(settings, run, workload, args.clients))
        copies.append(raw_copy(admin, workload))
        baseline = statistics.fmean(c.rate for c in copies[-2:])
        results.append((variant, measured, baseline))
        cpu = ", ".join(
            f"{name} {seconds * 1e6 / workload.rows:.0f}" for name, seconds in measured.cpu.items()
        )
        print(
            f"{variant}: {measured.end_to_end:,.0f} rows/s end to end "
            f"(HTTP accepted at {measured.accepted:,.0f} rows/s); raw COPY after it "
            f"{copies[-1].rate:,.0f} rows/s\n    CPU us per row: {cpu}",
            flush=True,
        )

    # Lag of the first variant (the defaults: what `make run` starts) at half its rate.
    variant, rate = results[0][0], results[0][1].end_to_end
    with fresh_database(admin, "lag") as settings, pipeline(settings, variant, logs) as run:
        lags = asyncio.run(lag_at(settings, run.urls[0], workload, rate / 2, args.lag_seconds))

    bare.append(raw_copy(admin, workload, keep=()))
    bare_rate = statistics.fmean(c.rate for c in bare)
    copy_cpu = statistics.fmean(c.postgres_us_per_row for c in copies)
    print(f"\nraw COPY: PostgreSQL CPU {copy_cpu:.0f} us per row")
    print(
        f"raw COPY without indexes: {bare_rate:,.0f} rows/s "
        f"({', '.join(f'{c.rate:,.0f}' for c in bare)}), "
        f"PostgreSQL CPU {statistics.fmean(c.postgres_us_per_row for c in bare):.0f} us per row"
    )
    print(
        "| variant | end to end rows/s | raw COPY rows/s | ratio | of COPY without indexes "
        "| CPU us/row (all processes) |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for variant, measured, baseline in results:
        print(
            f"| {variant} | {measured.end_to_end:,.0f} | {baseline:,.0f} "
            f"| {measured.end_to_end / baseline:.0%} | {measured.end_to_end / bare_rate:.0%} "
            f"| {sum(measured.cpu.values()) * 1e6 / workload.rows:.0f} |"
        )
    print(
        f"\naccepted->committed lag at {rate / 2:,.0f} rows/s ({results[0][0]}), "
        f"{len(lags)} batches: p50 {percentile(lags, 50) * 1000:.0f} ms, "
        f"p99 {percentile(lags, 99) * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms"
    )
    compare_victorialogs(workload, args.clients)
    print(f"(service logs in {logs})")


def index_costs(admin: Settings, workload: Workload) -> None:
    """What each index of log_entries costs a raw COPY, alone (beside the bare heap) and
    within the rest (beside every index): issue 21 asks which must exist on the open
    partition. Each COPY goes into a fresh database."""
    with (
        fresh_database(admin, "idx") as settings,
        psycopg.connect(settings.postgres_conninfo()) as c,
    ):
        names = log_entries_indexes(c)
    every, bare = raw_copy(admin, workload), raw_copy(admin, workload, keep=())
    for label, copied in (("every index", every), ("no index", bare)):
        print(
            f"{label}: {copied.rate:,.0f} rows/s, "
            f"PostgreSQL {copied.postgres_us_per_row:.1f} us/row"
        )
    print("| index | alone: rows/s | us/row over none | the others: rows/s | us/row it adds |")
    print("| --- | --- | --- | --- | --- |")
    for name in names:
        alone = raw_copy(admin, workload, keep={name})
        others = raw_copy(admin, workload, keep=set(names) - {name})
        over_none = alone.postgres_us_per_row - bare.postgres_us_per_row
        adds = every.postgres_us_per_row - others.postgres_us_per_row
        print(
            f"| {name} | {alone.rate:,.0f} | {over_none:+.1f} | {others.rate:,.0f} | {adds:+.1f} |",
            flush=True,
        )


def compare_victorialogs(workload: Workload, clients: int) -> None:
    """The same entries into VictoriaLogs, when VICTORIALOGS_BIN is set (README,
    "Benchmarks"): batches of 1,000 as ours, and of 100."""
    path = victorialogs.binary()
    if path is None:
        return
    for batch in (BATCH, 100):
        rate = asyncio.run(victorialogs.ingest_rate(path, workload.bodies, batch, clients))
        print(f"VictoriaLogs, same rows, batches of {batch:,}: {rate:,.0f} rows/s", flush=True)


if __name__ == "__main__":
    main()
