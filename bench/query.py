"""Query benchmark: every query shape of issue 3 through the HTTP API, on 10M rows.

    make bench-query                                  # 10M rows (loaded once, kept)
    BENCH_ROWS=1000000 .venv/bin/python -m bench.query
    .venv/bin/python -m bench.query --reps 40 --fresh
    .venv/bin/python -m bench.query --largest-tenant  # issue 21: the busiest tenant only

Loads the data with bench.load (reused when present), starts a gateway subprocess on
it (trusted-header auth, its own Redis key prefix) and times each shape, each
repetition with parameters drawn from the data, tenants taken in turn:

- cold: `Cache-Control: no-cache`, so PostgreSQL answers every time (the answer is
  stored, which the cached run then reads);
- cached: the same requests again, answered by the Redis query cache where it applies;
- SQL: the same question as plain SQL through psycopg on one connection (no HTTP, no
  JSON, no total count, no rollups for the counting shapes), the baseline that makes the
  API's own cost visible.

Prints p50/p95/max in milliseconds per shape beside its target, and bytes per row. A
shape whose endpoint answers 404/405 (not built yet) is reported as skipped. Figures,
not asserts.

With `VICTORIALOGS_BIN` set to a VictoriaLogs binary (README "Benchmarks"), the same rows
are loaded into it (once, kept) and every shape is asked of it too, in LogsQL, over HTTP,
in the same run (bench/victorialogs.py).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import AsyncConnection

from bench import victorialogs
from bench.load import Loaded, add_arguments, from_arguments
from bench.victorialogs import Question
from shared import rollups
from shared.filters import LogFilter, compile_filter
from tests.conftest import drop_keys

REPO = Path(__file__).resolve().parents[1]
WORD = re.compile(r"^[A-Za-z]{5,}$")
PAGE_SIZE = 100
MINUTE = timedelta(minutes=1)
CURSOR_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Sample:
    """One stored entry, the source of a repetition's parameters."""

    tenant_id: uuid.UUID
    service_name: str
    timestamp: datetime
    trace_id: str
    request_id: str
    message: str

    def word(self) -> str:
        words = [w for w in self.message.split() if WORD.match(w)]
        return words[len(words) // 2] if words else "failed"

    def phrase(self) -> str:
        words = self.message.split()
        pairs = [f"{a} {b}" for a, b in itertools.pairwise(words) if WORD.match(a) and b.isalpha()]
        return f'"{pairs[0]}"' if pairs else '"failed to"'


@dataclass(frozen=True, slots=True)
class Call:
    """One repetition: the HTTP request and the equivalent SQL."""

    method: str
    path: str
    tenant_id: uuid.UUID
    params: dict[str, str] | None = None
    body: dict[str, Any] | None = None
    sql: str = ""
    sql_params: tuple[Any, ...] = ()
    # For the counting shapes: the API's own rollup reads (shared/rollups.py), called
    # directly on one connection, without HTTP, the query guard or JSON.
    direct: Callable[[AsyncConnection[Any]], Awaitable[object]] | None = None
    # The same question for VictoriaLogs (bench/victorialogs.py), when it is compared.
    question: Question | None = None


@dataclass
class Result:
    shape: str
    target_ms: float | None
    cold: list[float] = field(default_factory=list)
    cached: list[float] = field(default_factory=list)
    cache_hits: int = 0
    sql: list[float] = field(default_factory=list)
    direct: list[float] = field(default_factory=list)
    victorialogs: list[float] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    skipped: str = ""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Gateway:
    """`python -m services.gateway` on the bench database, until closed."""

    def __init__(self, loaded: Loaded) -> None:
        s = loaded.settings
        self.port = free_port()
        # Its own key prefix, dropped with it (what it cached and kept).
        self.settings = replace(s, redis_key_prefix=f"bench-query-{os.getpid()}")
        env = {
            **os.environ,
            "POSTGRES_HOST": s.postgres_host,
            "POSTGRES_PORT": str(s.postgres_port),
            "POSTGRES_USER": s.postgres_user,
            "POSTGRES_DB": s.postgres_db,
            "SERVER_PORT": str(self.port),
            "AUTH_MODE": "trusted_header",
            "REDIS_KEY_PREFIX": self.settings.redis_key_prefix,
            "LOG_LEVEL": "warning",
            "DB_POOL_MIN": "2",
            # Beyond the benchmark's own request sizes: no tenant limit gets in the way.
            "TENANT_MAX_CONCURRENT_QUERIES": "100",
        }
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (kept open for the child)
            prefix="bench-gateway-", suffix=".log", delete=False
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.gateway"],
            env=env,
            cwd=REPO,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited; see {self.log.name}")
            try:
                if httpx.get(f"{self.base}/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gateway not ready within 60 s; see {self.log.name}")

    def forget_kept_hours(self) -> None:
        """Drop every hour the gateway kept (shared/kept_hours.py, keys `hours:…`): the
        next count is a first ask."""
        drop_keys(self.settings, "hours:*")

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        drop_keys(self.settings)


def draw_samples(
    conn: psycopg.Connection, tenants: list[uuid.UUID], per: int
) -> dict[uuid.UUID, list[Sample]]:
    """Random stored entries of each tenant (a block sample, then shuffled)."""
    rng = random.Random(7)
    samples: dict[uuid.UUID, list[Sample]] = {}
    for tenant in tenants:
        rows = conn.execute(
            'SELECT tenant_id, service_name, "timestamp", trace_id, request_id, message '
            "FROM log_entries TABLESAMPLE SYSTEM (2) REPEATABLE (7) WHERE tenant_id = %s "
            "LIMIT 2000",
            (tenant,),
        ).fetchall()
        rng.shuffle(rows)
        if rows:
            samples[tenant] = [Sample(*row) for row in rows[:per]]
    return samples


def largest_tenant(conn: psycopg.Connection) -> uuid.UUID:
    row = conn.execute(
        "SELECT tenant_id FROM log_counts_daily GROUP BY 1 ORDER BY sum(count) DESC LIMIT 1"
    ).fetchone()
    if row is None:
        raise SystemExit("no rows in the benchmark database")
    return uuid.UUID(str(row[0]))


def take_in_turn(samples: dict[uuid.UUID, list[Sample]], count: int) -> list[Sample]:
    """`count` samples, one tenant after the other, each tenant's samples in order."""
    tenants = list(samples)
    picks = []
    for i in range(count):
        own = samples[tenants[i % len(tenants)]]
        picks.append(own[(i // len(tenants)) % len(own)])
    return picks


_COLS = (
    'id, tenant_id, "timestamp", level, service_name, message, trace_id, span_id, user_id, '
    "request_id, metadata, source, host, environment"
)
_LATEST = (
    f'SELECT {_COLS} FROM log_entries WHERE tenant_id = %s AND "timestamp" >= %s '
    'AND "timestamp" < %s ORDER BY "timestamp" DESC, id DESC LIMIT 100'
)
_SERVICE_WARN = (
    f"SELECT {_COLS} FROM log_entries WHERE tenant_id = %s AND service_name = %s AND level >= 3 "
    'AND "timestamp" >= %s AND "timestamp" < %s ORDER BY "timestamp" DESC, id DESC LIMIT 100'
)
_TRACE = (
    f"SELECT {_COLS} FROM log_entries WHERE tenant_id = %s AND trace_id = %s "
    'ORDER BY "timestamp", id LIMIT 1000'
)
_REQUEST = (
    f"SELECT {_COLS} FROM log_entries WHERE tenant_id = %s AND request_id = %s "
    'ORDER BY "timestamp", id LIMIT 1000'
)
_SEARCH = (
    f'SELECT {_COLS} FROM log_entries WHERE tenant_id = %s AND "timestamp" >= %s '
    'AND "timestamp" < %s AND (message COLLATE "C") ILIKE %s '
    'ORDER BY "timestamp" DESC, id DESC LIMIT 100'
)
_SEARCH_COUNT = (
    'SELECT count(*) FROM log_entries WHERE tenant_id = %s AND "timestamp" >= %s '
    'AND "timestamp" < %s AND (message COLLATE "C") ILIKE %s'
)
_WORD_HISTOGRAM = (
    "SELECT date_bin('1 hour', \"timestamp\", TIMESTAMPTZ '2000-01-01Z'), level, count(*) "
    'FROM log_entries WHERE tenant_id = %s AND "timestamp" >= %s AND "timestamp" < %s '
    'AND (message COLLATE "C") ILIKE %s GROUP BY 1, 2'
)
_WORD_QUARTERS = _WORD_HISTOGRAM.replace("'1 hour'", "'15 minutes'")
_HISTOGRAM = (
    "SELECT date_bin('1 minute', \"timestamp\", TIMESTAMPTZ '2000-01-01Z'), level, count(*) "
    'FROM log_entries WHERE tenant_id = %s AND "timestamp" >= %s AND "timestamp" < %s '
    "GROUP BY 1, 2"
)
_STATS = (
    'SELECT service_name, level, count(*), min("timestamp"), max("timestamp") FROM log_entries '
    'WHERE tenant_id = %s AND "timestamp" >= %s AND "timestamp" < %s GROUP BY 1, 2'
)
_KEYSET = (
    f'SELECT {_COLS} FROM log_entries WHERE tenant_id = %s AND "timestamp" >= %s '
    'AND "timestamp" < %s AND "timestamp" <= %s AND ("timestamp" < %s OR id < %s) '
    'ORDER BY "timestamp" DESC, id DESC LIMIT 100'
)


async def as_tenant(conn: AsyncConnection[Any], tenant: uuid.UUID) -> None:
    """The tenant the view tenant_log_entries shows, which the rollup functions read raw
    rows through (the gateway sets it in `tenant_scope`); without it they count none."""
    await conn.execute("SELECT set_config('app.tenant_id', %s, false)", (str(tenant),))


async def rollup_stats(conn: AsyncConnection[Any], tenant: uuid.UUID, f: LogFilter) -> object:
    """What GET /stats reads: grouped counts, then the exact first and last entry."""
    await as_tenant(conn, tenant)
    compiled = compile_filter(f)
    groups, _ = await rollups.count_groups(conn, tenant, compiled, ("service_name", "level"))
    first = min(groups, key=lambda g: g.first)
    last = max(groups, key=lambda g: g.last)
    return (
        await rollups.exact_time(conn, tenant, compiled, first.first, first.first_step,
                                 newest=False),
        await rollups.exact_time(conn, tenant, compiled, last.last, last.last_step, newest=True),
    )  # fmt: skip


async def rollup_histogram(
    conn: AsyncConnection[Any], tenant: uuid.UUID, f: LogFilter, interval: timedelta
) -> object:
    """What POST /aggregate reads."""
    await as_tenant(conn, tenant)
    return await rollups.count_buckets(conn, tenant, compile_filter(f), interval, by_service=False)


def like(term: str) -> str:
    escaped = term.strip('"').replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


# The word count as first asked: the gateway's kept hours (shared/kept_hours.py) are
# dropped before each repetition, since the samples repeat words ("created" is in many
# tenants' messages) and a repeated word would otherwise be counted from kept hours.
FIRST_ASKED = "word count, 7 days"
# The same requests once each question's past hours are kept: each is asked once, untimed,
# before it is timed. `no-cache` still skips the answer cache in both.
HOURS_KEPT = "word count, 7 days, hours kept"
# A word's hourly histogram over the week (what the web explorer draws for a search), as
# first asked: kept hours dropped before each repetition too.
WORD_PER_HOUR = "hourly word histogram, 7 days"
# A word's histogram over a day in quarter hours (what the explorer draws for a search
# over 24 hours), as first asked.
WORD_PER_QUARTER = "15-minute word histogram, 24 h"


def shapes(end: datetime) -> dict[str, tuple[float | None, Callable[[Sample], Call]]]:
    """Each shape: its target (ms) and how a sample becomes a request."""
    day = (end - timedelta(days=1), end)
    week = (end - timedelta(days=7), end)

    def question(s: Sample, span: tuple[datetime, datetime], term: str = "") -> Question:
        return Question(s.tenant_id, s.service_name, *span, s.trace_id, s.request_id, term)

    def latest(s: Sample, span: tuple[datetime, datetime] = day) -> Call:
        return Call("GET", "/api/v1/logs", s.tenant_id,
                    {"page_size": "100", "start_time": iso(span[0]), "end_time": iso(span[1])},
                    sql=_LATEST, sql_params=(s.tenant_id, *span),
                    question=question(s, span))  # fmt: skip

    def service_warn(s: Sample) -> Call:
        hour = (s.timestamp - timedelta(minutes=30), s.timestamp + timedelta(minutes=30))
        return Call("GET", "/api/v1/logs", s.tenant_id,
                    {"service_name": s.service_name, "min_level": "WARN",
                     "start_time": iso(hour[0]), "end_time": iso(hour[1]), "page_size": "100"},
                    sql=_SERVICE_WARN, sql_params=(s.tenant_id, s.service_name, *hour),
                    question=question(s, hour))  # fmt: skip

    def trace(s: Sample) -> Call:
        return Call("GET", f"/api/v1/logs/trace/{s.trace_id}", s.tenant_id,
                    sql=_TRACE, sql_params=(s.tenant_id, s.trace_id),
                    question=question(s, week))  # fmt: skip

    def request(s: Sample) -> Call:
        return Call("GET", f"/api/v1/logs/request/{s.request_id}", s.tenant_id,
                    sql=_REQUEST, sql_params=(s.tenant_id, s.request_id),
                    question=question(s, week))  # fmt: skip

    def word(s: Sample, span: tuple[datetime, datetime] = day) -> Call:
        return Call("GET", "/api/v1/logs", s.tenant_id,
                    {"search": s.word(), "start_time": iso(span[0]), "end_time": iso(span[1]),
                     "page_size": "100"},
                    sql=_SEARCH, sql_params=(s.tenant_id, *span, like(s.word())),
                    question=question(s, span, s.word()))  # fmt: skip

    def word_count(s: Sample) -> Call:
        return Call("GET", "/api/v1/logs/stats", s.tenant_id,
                    {"search": s.word(), "start_time": iso(week[0]), "end_time": iso(week[1])},
                    sql=_SEARCH_COUNT, sql_params=(s.tenant_id, *week, like(s.word())),
                    question=question(s, week, s.word()))  # fmt: skip

    def phrase(s: Sample) -> Call:
        return Call("GET", "/api/v1/logs", s.tenant_id,
                    {"search": s.phrase(), "start_time": iso(day[0]), "end_time": iso(day[1]),
                     "page_size": "100"},
                    sql=_SEARCH, sql_params=(s.tenant_id, *day, like(s.phrase())),
                    question=question(s, day, s.phrase()))  # fmt: skip

    def histogram(s: Sample) -> Call:
        f = LogFilter(start_time=iso(day[0]), end_time=iso(day[1]))
        return Call("POST", "/api/v1/logs/aggregate", s.tenant_id,
                    body={"interval": "1m", "start_time": iso(day[0]), "end_time": iso(day[1])},
                    sql=_HISTOGRAM, sql_params=(s.tenant_id, *day),
                    direct=lambda c: rollup_histogram(c, s.tenant_id, f, MINUTE),
                    question=question(s, day))  # fmt: skip

    def word_histogram(
        s: Sample, interval: str = "1h", span: tuple[datetime, datetime] = week
    ) -> Call:
        baseline = _WORD_HISTOGRAM if interval == "1h" else _WORD_QUARTERS
        return Call("POST", "/api/v1/logs/aggregate", s.tenant_id,
                    body={"interval": interval, "search": s.word(),
                          "start_time": iso(span[0]), "end_time": iso(span[1])},
                    sql=baseline, sql_params=(s.tenant_id, *span, like(s.word())),
                    question=question(s, span, s.word()))  # fmt: skip

    def stats(s: Sample) -> Call:
        f = LogFilter(start_time=iso(week[0]), end_time=iso(week[1]))
        return Call("GET", "/api/v1/logs/stats", s.tenant_id,
                    {"start_time": iso(week[0]), "end_time": iso(week[1])},
                    sql=_STATS, sql_params=(s.tenant_id, *week),
                    direct=lambda c: rollup_stats(c, s.tenant_id, f),
                    question=question(s, week))  # fmt: skip

    return {
        "latest 100 of a tenant (24 h)": (20, latest),
        # Issue 21's table asks these two over the week.
        "latest 100 of a tenant (7 d)": (20, lambda s: latest(s, week)),
        "service + min_level WARN, 1 h": (20, service_warn),
        "trace lookup": (10, trace),
        "request lookup": (10, request),
        "word search, 24 h": (300, word),
        "word search, 7 d": (300, lambda s: word(s, week)),
        "phrase search, 24 h": (300, phrase),
        FIRST_ASKED: (150, word_count),
        HOURS_KEPT: (150, word_count),
        "1-minute aggregate, 24 h": (50, histogram),
        WORD_PER_HOUR: (150, word_histogram),
        WORD_PER_QUARTER: (150, lambda s: word_histogram(s, "15m", day)),
        "stats, 7 days": (50, stats),
    }


def send(client: httpx.Client, call: Call, *, fresh: bool) -> tuple[float, httpx.Response]:
    headers = {"X-Tenant-ID": str(call.tenant_id)}
    if fresh:
        headers["Cache-Control"] = "no-cache"
    started = time.perf_counter()
    response = client.request(
        call.method, call.path, params=call.params, json=call.body, headers=headers
    )
    response.read()
    return (time.perf_counter() - started) * 1000, response


def run_sql(conn: psycopg.Connection, call: Call) -> float:
    started = time.perf_counter()
    conn.execute(call.sql, call.sql_params, prepare=False).fetchall()
    return (time.perf_counter() - started) * 1000


def measure_api(
    name: str,
    target: float | None,
    calls: list[Call],
    client: httpx.Client,
    before_cold: Callable[[Call], object] | None = None,
) -> Result:
    """Each call cold (no-cache), then at once again from the cache (an open range is
    cached only a few seconds). `before_cold` runs, untimed, before each cold call."""
    result = Result(name, target, calls=calls)
    _, probe = send(client, calls[0], fresh=True)
    if probe.status_code != 200:
        result.skipped = f"endpoint answered {probe.status_code}: {probe.text[:200]}"
        return result
    for call in calls:
        if before_cold is not None:
            before_cold(call)
        ms, response = send(client, call, fresh=True)
        if response.status_code != 200:
            result.skipped = f"{response.status_code}: {response.text[:200]}"
            return result
        result.cold.append(ms)
        ms, response = send(client, call, fresh=False)
        result.cached.append(ms)
        result.cache_hits += response.headers.get("x-cache") == "hit"
    return result


def measure_baselines(results: list[Result], conninfo: str) -> None:
    """After every API timing: the raw-row baselines of the counting shapes read
    gigabytes, and would evict what the next shape's API calls need from the cache."""

    async def direct_all() -> None:
        async with await AsyncConnection.connect(conninfo, autocommit=True) as aconn:
            for r in results:
                for call in r.calls if not r.skipped else []:
                    if call.direct is not None:
                        started = time.perf_counter()
                        # In a transaction, as the gateway reads (tenant_scope).
                        async with aconn.transaction():
                            await call.direct(aconn)
                        r.direct.append((time.perf_counter() - started) * 1000)

    asyncio.run(direct_all())
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for r in results:
            for call in r.calls if not r.skipped else []:
                r.sql.append(run_sql(conn, call))


def measure_victorialogs(results: list[Result], loaded: Loaded, client: httpx.Client) -> str:
    """Every shape's questions asked of VictoriaLogs on the same rows, when
    VICTORIALOGS_BIN is set; returns what to print about it ("" when not compared)."""
    path = victorialogs.binary()
    if path is None:
        return ""
    key = f"{loaded.settings.postgres_db}-{loaded.end:%Y%m%d%H%M}"
    asks = victorialogs.queries()
    notes = []
    with victorialogs.running(path, key) as server, httpx.Client(timeout=120) as vl:
        print("loading the same rows into VictoriaLogs (once per load) ...", flush=True)
        rows, seconds = victorialogs.load_same_rows(server, loaded.settings.postgres_conninfo())
        if rows:
            notes.append(f"loaded {rows:,} rows into it in {seconds:.0f} s")
        for r in results:
            ask = asks.get(r.shape)
            if r.skipped or ask is None:
                continue
            print(f"timing {r.shape} on VictoriaLogs ...", flush=True)
            for call in r.calls:
                assert call.question is not None
                started = time.perf_counter()
                server.query(ask(call.question), vl)
                r.victorialogs.append((time.perf_counter() - started) * 1000)
            first = r.calls[0].question
            if r.shape.startswith("word count") and first is not None:
                # Word filter there, substring match here: the counts show how near.
                ours = send(client, r.calls[0], fresh=True)[1].json()["total_count"]
                theirs = server.query(ask(first), vl)
                notes.append(
                    f"word count of {first.term!r}: ours {ours:,}, "
                    f"VictoriaLogs {int(str(theirs[0]['n'])) if theirs else 0:,}"
                )
        disk = sum(f.stat().st_size for f in server.data.rglob("*") if f.is_file())
        notes.append(f"its data directory: {disk / max(loaded.spec.rows, 1):.1f} B/log")
    return "VictoriaLogs " + Path(path).name + ": " + "; ".join(notes)


def cursor_calls(
    client: httpx.Client, conn: psycopg.Connection, loaded: Loaded, reps: int
) -> tuple[list[Call], str]:
    """Page CURSOR_PAGE of the newest-first walk over 7 days, for the largest tenants:
    the cursor is found by walking once; each repetition then fetches that page."""
    week = (loaded.end - timedelta(days=7), loaded.end)
    need = PAGE_SIZE * CURSOR_PAGE
    counts = conn.execute(
        "SELECT tenant_id, sum(count) FROM log_counts_hourly GROUP BY 1 HAVING sum(count) >= %s "
        "ORDER BY 2 DESC LIMIT 3",
        (need,),
    ).fetchall()
    if not counts:
        return [], f"no tenant has {need:,} rows"
    found: list[Call] = []
    for tenant, _ in counts:
        params = {"start_time": iso(week[0]), "end_time": iso(week[1]), "page_size": str(PAGE_SIZE)}
        headers = {"X-Tenant-ID": str(tenant), "Cache-Control": "no-cache"}
        cursor = None
        last_entry: dict[str, Any] | None = None
        for _ in range(CURSOR_PAGE - 1):
            page = {**params, "cursor": cursor} if cursor else params
            response = client.get("/api/v1/logs", params=page, headers=headers)
            if response.status_code in (404, 405):
                return [], f"endpoint answered {response.status_code}"
            body = response.json()
            cursor = body.get("next_cursor")
            last_entry = body["entries"][-1] if body.get("entries") else None
            if cursor is None or last_entry is None:
                return [], "the walk ended early"
        assert last_entry is not None
        ts = datetime.fromisoformat(last_entry["timestamp"])
        found.append(
            Call("GET", "/api/v1/logs", tenant, {**params, "cursor": str(cursor)},
                 sql=_KEYSET,
                 sql_params=(tenant, *week, ts, ts, uuid.UUID(last_entry["id"])))
        )  # fmt: skip
    return [found[i % len(found)] for i in range(reps)], ""


# Each index of log_entries' partitions under its parent's name (the search indexes the
# janitor builds on closed days have none: "search").
_INDEX_SIZES_SQL = """
SELECT coalesce(parent.relname, 'log_entries search'), sum(pg_relation_size(x.indexrelid))
FROM pg_partition_tree('log_entries') t
JOIN pg_index x ON x.indrelid = t.relid
LEFT JOIN pg_inherits i ON i.inhrelid = x.indexrelid
LEFT JOIN pg_class parent ON parent.oid = i.inhparent
WHERE t.isleaf
GROUP BY 1 ORDER BY 2 DESC
"""
_ROLLUPS = (
    "log_counts",
    "log_counts_packed",
    "log_counts_hourly",
    "log_counts_daily",
    "log_counts_by_level",
)
_WORD_COUNTS = ("log_word_counts", "log_word_spans")  # shared/word_counts.py


def sizes(conn: psycopg.Connection, rows: int) -> list[tuple[str, int, int]]:
    """(relation, bytes, rows) for log_entries (heap and TOAST, then each index) and the
    rollups and word counts (each with its indexes): issue 21's bytes-per-log breakdown."""
    out = []
    table = conn.execute(
        "SELECT sum(pg_table_size(relid)) FROM pg_partition_tree('log_entries') WHERE isleaf"
    ).fetchone()
    out.append(("log_entries heap+TOAST", int(table[0]) if table else 0, rows))
    for name, size in conn.execute(_INDEX_SIZES_SQL).fetchall():
        out.append((f"  index {str(name).removeprefix('log_entries')[1:]}", int(size), rows))
    for rollup in (*_ROLLUPS, *_WORD_COUNTS):
        if conn.execute("SELECT to_regclass(%s)", (rollup,)).fetchone() == (None,):
            continue
        size = conn.execute("SELECT pg_total_relation_size(%s::regclass)", (rollup,)).fetchone()
        n = conn.execute(f"SELECT count(*) FROM {rollup}").fetchone()
        out.append((rollup, int(size[0]) if size else 0, int(n[0]) if n else 0))
    return out


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):7.1f} {percentile(values, 0.95):7.1f} {max(values):7.1f}"


def report(
    results: list[Result],
    loaded: Loaded,
    reps: int,
    size_rows: list[tuple[str, int, int]],
    compared: str,
    asked: str,
) -> None:
    print()
    print(f"{loaded.spec.rows:,} rows, {loaded.spec.tenants} tenants, {loaded.spec.days:g} days "
          f"(loaded in {loaded.load_seconds:.0f} s); {reps} repetitions per shape, {asked}; "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    print("milliseconds: p50 / p95 / max")
    header = (
        f"{'shape':34} {'target':>7}  {'API cold':^23}  {'API cached':^23} {'hits':>5}  "
        f"{'SQL baseline':^23}  {'rollup reads, direct':^23}"
        + (f"  {'VictoriaLogs':^23} {'VL/ours':>7}" if compared else "")
    )
    print(header)
    print("-" * len(header))
    for r in results:
        target = f"<{r.target_ms:g}" if r.target_ms else ""
        if r.skipped:
            print(f"{r.shape:34} {target:>7}  skipped: {r.skipped}")
            continue
        timings = (
            f"{fmt(r.cold)}  {fmt(r.cached)} {r.cache_hits:>5}  {fmt(r.sql):23}  {fmt(r.direct):23}"
        )
        if r.victorialogs:
            # Above 1: VictoriaLogs takes longer than our cold API answer (p50s).
            ratio = statistics.median(r.victorialogs) / statistics.median(r.cold)
            timings += f"  {fmt(r.victorialogs)} {ratio:6.1f}x"
        print(f"{r.shape:34} {target:>7}  {timings}")
    if compared:
        print(compared)
    print()
    for name, size, rows in size_rows:
        per = f"{size / rows:8.1f} B/row" if rows else ""
        print(f"{name:26} {size / 1024**2:9.1f} MiB  {rows:>12,} rows {per}")
    per_log = max(loaded.spec.rows, 1)
    rollups = sum(size for name, size, _ in size_rows if name in _ROLLUPS)
    words = sum(size for name, size, _ in size_rows if name in _WORD_COUNTS)
    entries = sum(size for _, size, _ in size_rows) - rollups - words
    for label, size in (
        ("log_entries table+index", entries),
        ("rollups", rollups),
        ("word counts", words),
        ("all included", entries + rollups + words),
    ):
        print(f"{label:26} {size / 1024**2:9.1f} MiB  {size / per_log:8.1f} B per stored log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument(
        "--largest-tenant",
        action="store_true",
        help="every repetition for the tenant with the most rows (issue 21's question), "
        "instead of tenants in turn",
    )
    args = parser.parse_args()
    loaded = from_arguments(args)
    print(f"data: {loaded.settings.postgres_db}, ends {loaded.end:%F %R}Z", flush=True)
    gateway = Gateway(loaded)
    try:
        with (
            httpx.Client(base_url=gateway.base, timeout=60) as client,
            psycopg.connect(loaded.settings.postgres_conninfo(), autocommit=True) as conn,
        ):
            tenants = [largest_tenant(conn)] if args.largest_tenant else loaded.tenants
            picks = take_in_turn(draw_samples(conn, tenants, args.reps), args.reps)
            results = []
            before: dict[str, Callable[[Call], object]] = {
                FIRST_ASKED: lambda _: gateway.forget_kept_hours(),
                WORD_PER_HOUR: lambda _: gateway.forget_kept_hours(),
                WORD_PER_QUARTER: lambda _: gateway.forget_kept_hours(),
                HOURS_KEPT: lambda call: send(client, call, fresh=True),
            }
            for name, (target, make) in shapes(loaded.end).items():
                print(f"timing {name} ...", flush=True)
                calls = [make(s) for s in picks]
                results.append(measure_api(name, target, calls, client, before.get(name)))
            print(f"timing page {CURSOR_PAGE} by cursor (walking to it first) ...", flush=True)
            calls, why = cursor_calls(client, conn, loaded, args.reps)
            name = f"page {CURSOR_PAGE:,} by cursor"
            if calls:
                results.append(measure_api(name, 20, calls, client))
            else:
                results.append(Result(name, 20, skipped=why))
            print("timing the SQL baselines ...", flush=True)
            measure_baselines(results, loaded.settings.postgres_conninfo())
            compared = measure_victorialogs(results, loaded, client)
            asked = "the largest tenant" if args.largest_tenant else "tenants in turn"
            size_rows = sizes(conn, loaded.spec.rows)
            report(results, loaded, args.reps, size_rows, compared, asked)
    finally:
        gateway.close()


if __name__ == "__main__":
    main()
