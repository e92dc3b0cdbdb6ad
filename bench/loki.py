"""Loki read API benchmark: what Grafana's Loki data source asks, through /loki/api/v1,
beside the same question through our REST API, in the same run, on 10M rows.

    make bench-loki
    BENCH_ROWS=1000000 .venv/bin/python -m bench.loki --reps 40

Uses bench.load's database (loaded once, kept) and bench.query's gateway subprocess
(trusted-header auth). Shapes, each repetition with a tenant and service drawn from the
data, tenants in turn:

- Explore's first page for a service over 1 h and over 24 h (1000 lines, newest first);
- the log-volume histogram over 24 h, `sum by (level, detected_level)
  (count_over_time({service_name="…"}[1m]))`, against POST /api/v1/logs/aggregate;
- a line filter over 24 h (`|= "word"`), against `search=word`;
- a line filter's count per hour over 7 days, `sum by (level) (count_over_time({…} |=
  "word" [1h]))`, against POST /api/v1/logs/aggregate with `search` and `interval: 1h`;
- label values (`/label/service_name/values`, 24 h), against GET /api/v1/logs/services;
- `index/volume` by service over 24 h (Grafana's service selection), against GET
  /api/v1/logs/services; `index/volume_range` of a service by level, 1 h steps over 24 h,
  against POST /api/v1/logs/aggregate with `interval: 1h`.

Each call cold (`Cache-Control: no-cache`: PostgreSQL answers) and again at once (the
query cache). Prints p50/p95/max in milliseconds. Figures, not asserts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from bench.load import add_arguments, from_arguments
from bench.query import Gateway, Sample, draw_samples, fmt, iso, take_in_turn

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LINES = 1000  # Grafana's default line limit


def ns(moment: datetime) -> str:
    delta = moment - EPOCH
    return str((delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000)


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    params: dict[str, str] | None = None
    body: dict[str, Any] | None = None


@dataclass
class Timing:
    shape: str
    target_ms: float | None
    loki_cold: list[float] = field(default_factory=list)
    loki_cached: list[float] = field(default_factory=list)
    rest_cold: list[float] = field(default_factory=list)
    rest_cached: list[float] = field(default_factory=list)
    skipped: str = ""


Pair = tuple[Request, Request]  # (Loki, REST)


def shapes(end: datetime) -> dict[str, tuple[float | None, Callable[[Sample], Pair]]]:
    day = (end - timedelta(days=1), end)

    def explore(hours: int) -> Callable[[Sample], Pair]:
        def make(s: Sample) -> Pair:
            until = min(end, s.timestamp + timedelta(minutes=30))
            since = until - timedelta(hours=hours)
            loki = Request("GET", "/loki/api/v1/query_range", {
                "query": f'{{service_name="{s.service_name}"}}', "start": ns(since),
                "end": ns(until), "limit": str(LINES), "direction": "backward",
                "step": "60000ms",
            })  # fmt: skip
            rest = Request("GET", "/api/v1/logs", {
                "service_name": s.service_name, "start_time": iso(since),
                "end_time": iso(until), "page_size": str(LINES),
            })  # fmt: skip
            return loki, rest

        return make

    def volume(s: Sample) -> Pair:
        query = (
            "sum by (level, detected_level) "
            f'(count_over_time({{service_name="{s.service_name}"}} [1m]))'
        )
        loki = Request("GET", "/loki/api/v1/query_range", {
            "query": query, "start": ns(day[0]), "end": ns(day[1]), "step": "60000ms",
        })  # fmt: skip
        rest = Request("POST", "/api/v1/logs/aggregate", body={
            "service_name": s.service_name, "interval": "1m", "start_time": iso(day[0]),
            "end_time": iso(day[1]),
        })  # fmt: skip
        return loki, rest

    def line_filter(s: Sample) -> Pair:
        loki = Request("GET", "/loki/api/v1/query_range", {
            "query": f'{{service_name="{s.service_name}"}} |= "{s.word()}"',
            "start": ns(day[0]), "end": ns(day[1]), "limit": "100",
        })  # fmt: skip
        rest = Request("GET", "/api/v1/logs", {
            "service_name": s.service_name, "search": s.word(), "start_time": iso(day[0]),
            "end_time": iso(day[1]), "page_size": "100",
        })  # fmt: skip
        return loki, rest

    def word_per_hour(s: Sample) -> Pair:
        # A line filter's count per hour over the week, against /aggregate with search.
        week = (end - timedelta(days=7), end)
        query = f'sum by (level) (count_over_time({{service_name=~".+"}} |= "{s.word()}" [1h]))'
        loki = Request("GET", "/loki/api/v1/query_range", {
            "query": query, "start": ns(week[0]), "end": ns(week[1]), "step": "3600",
        })  # fmt: skip
        rest = Request("POST", "/api/v1/logs/aggregate", body={
            "search": s.word(), "interval": "1h", "start_time": iso(week[0]),
            "end_time": iso(week[1]),
        })  # fmt: skip
        return loki, rest

    def label_values(s: Sample) -> Pair:
        window = {"start": ns(day[0]), "end": ns(day[1])}
        rest_window = {"start_time": iso(day[0]), "end_time": iso(day[1])}
        return (
            Request("GET", "/loki/api/v1/label/service_name/values", window),
            Request("GET", "/api/v1/logs/services", rest_window),
        )

    def index_volume(s: Sample) -> Pair:
        # Grafana's service selection (Logs Drilldown): bytes per service, from the rollups.
        return (
            Request("GET", "/loki/api/v1/index/volume", {
                "query": '{service_name=~".+"}', "start": ns(day[0]), "end": ns(day[1]),
                "limit": "1000",
            }),
            Request("GET", "/api/v1/logs/services", {
                "start_time": iso(day[0]), "end_time": iso(day[1]),
            }),
        )  # fmt: skip

    def volume_range(s: Sample) -> Pair:
        return (
            Request("GET", "/loki/api/v1/index/volume_range", {
                "query": f'{{service_name="{s.service_name}"}}', "targetLabels": "level",
                "start": ns(day[0]), "end": ns(day[1]), "step": "1h",
            }),
            Request("POST", "/api/v1/logs/aggregate", body={
                "service_name": s.service_name, "interval": "1h", "start_time": iso(day[0]),
                "end_time": iso(day[1]),
            }),
        )  # fmt: skip

    return {
        "Explore first page, service, 1 h": (None, explore(1)),
        "Explore first page, service, 24 h": (None, explore(24)),
        "volume histogram 1m, 24 h": (20, volume),
        "line filter |= word, 24 h": (None, line_filter),
        "word count per hour, 7 d": (150, word_per_hour),
        "label values service_name, 24 h": (None, label_values),
        "index/volume by service, 24 h": (None, index_volume),
        "index/volume_range by level 1h, 24 h": (None, volume_range),
    }


def send(client: httpx.Client, r: Request, tenant: Any, *, fresh: bool) -> tuple[float, int, str]:
    headers = {"X-Tenant-ID": str(tenant), "X-Scope-OrgID": str(tenant)}
    if fresh:
        headers["Cache-Control"] = "no-cache"
    began = time.perf_counter()
    response = client.request(r.method, r.path, params=r.params, json=r.body, headers=headers)
    response.read()
    return (time.perf_counter() - began) * 1000, response.status_code, response.text[:200]


def measure(
    name: str, target: float | None, pairs: list[tuple[Any, Pair]], client: httpx.Client
) -> Timing:
    t = Timing(name, target)
    for i, (tenant, (loki, rest)) in enumerate(pairs):
        both = [(loki, t.loki_cold, t.loki_cached), (rest, t.rest_cold, t.rest_cached)]
        # In turn, each API asks first: the second finds PostgreSQL's buffers warm.
        for request, cold, cached in both if i % 2 == 0 else both[::-1]:
            ms, status, text = send(client, request, tenant, fresh=True)
            if status != 200:
                t.skipped = f"{request.path} answered {status}: {text}"
                return t
            cold.append(ms)
            ms, _, _ = send(client, request, tenant, fresh=False)
            cached.append(ms)
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    loaded = from_arguments(args)
    print(f"data: {loaded.settings.postgres_db}, ends {loaded.end:%F %R}Z", flush=True)
    gateway = Gateway(loaded)
    try:
        with (
            httpx.Client(base_url=gateway.base, timeout=120) as client,
            psycopg.connect(loaded.settings.postgres_conninfo(), autocommit=True) as conn,
        ):
            picks = take_in_turn(draw_samples(conn, loaded.tenants, args.reps), args.reps)
            results = []
            for name, (target, make) in shapes(loaded.end).items():
                print(f"timing {name} ...", flush=True)
                pairs = [(s.tenant_id, make(s)) for s in picks]
                results.append(measure(name, target, pairs, client))
    finally:
        gateway.close()
    print()
    print(f"{loaded.spec.rows:,} rows, {loaded.spec.tenants} tenants, {loaded.spec.days:g} days; "
          f"{args.reps} repetitions per shape; {os.cpu_count()} CPUs")  # fmt: skip
    print("milliseconds: p50 / p95 / max")
    header = (
        f"{'shape':36} {'target':>7}  {'Loki API cold':^23}  {'REST cold':^23}  "
        f"{'Loki API cached':^23}  {'REST cached':^23}  {'Loki/REST':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        target = f"<{r.target_ms:g}" if r.target_ms else ""
        if r.skipped:
            print(f"{r.shape:36} {target:>7}  skipped: {r.skipped}")
            continue
        ratio = statistics.median(r.loki_cold) / statistics.median(r.rest_cold)
        print(
            f"{r.shape:36} {target:>7}  {fmt(r.loki_cold)}  {fmt(r.rest_cold)}  "
            f"{fmt(r.loki_cached)}  {fmt(r.rest_cached)}  {ratio:8.2f}x"
        )


if __name__ == "__main__":
    main()
