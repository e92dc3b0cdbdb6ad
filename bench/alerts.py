"""`make bench-alerts`: one evaluation round of 1,000 rules on the 10M-row database, and
how long a notification takes from the ingest that crosses a threshold to the webhook.

1. Rounds. 1,000 enabled rules over the loaded tenants (bench.load; `--rows`), 70 %
   answerable from the rollups (service, level, min_level, environment; some grouped by
   service), 30 % with a search word or a metadata term (counted from rows), windows of
   5 to 60 minutes. `evaluate_round` (services/evaluator/rounds.py) runs `--rounds`
   times at the data's end, one tick apart: wall time and PostgreSQL CPU per round.
   Baseline, in the same run: the same 1,000 counts alone (shared/alerts.count_rule on
   one connection per rule in its tenant's scope, nothing claimed or written).
2. Latency. A fresh database with real gateway, writer and evaluator processes
   (ALERT_EVAL_INTERVAL=`--interval`) and a webhook receiver here: `--latency-rules`
   rules, each crossing its threshold with one ingest request at a random moment; the
   time from that request's 202 to the webhook's arrival, p50/p99 (target: under
   interval + 5 s).

Figures, not asserts.

    .venv/bin/python -m bench.alerts [--rows 10000000] [--rules 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg
from psycopg.types.json import Jsonb

from bench.ingest import cpu_seconds, fresh_database
from bench.load import Loaded, add_arguments, from_arguments
from services.evaluator.rounds import RoundDeps, evaluate_round
from shared.alerts import RULE_COLUMNS, Window, count_rule, rule_from_row
from shared.db import make_pool, tenant_scope
from shared.redis_conn import make_redis
from shared.redis_keys import RedisKeys
from shared.settings import Settings
from tests.processes import Service, free_port, service_env

WORDS = ("timeout", "refused", "failed", "retry", "expired")
SERVICES_SQL = """
SELECT service_name FROM log_counts_daily WHERE tenant_id = %s
GROUP BY service_name ORDER BY sum(count) DESC LIMIT 8
"""


def rule_specs(loaded: Loaded, count: int, seed: int) -> list[dict[str, Any]]:
    """`count` rules over the loaded tenants: 70 % rollup-backed, 30 % counting rows."""
    rng = random.Random(seed)
    with psycopg.connect(loaded.settings.postgres_conninfo()) as conn:
        services = {
            t: [r[0] for r in conn.execute(SERVICES_SQL, (t,))] or ["api"] for t in loaded.tenants
        }
    specs = []
    for i in range(count):
        tenant = loaded.tenants[i % len(loaded.tenants)]
        service = rng.choice(services[tenant])
        filter_: dict[str, Any]
        group_by: list[str] = []
        if rng.random() < 0.7:
            filter_ = rng.choice(
                [
                    {"service_name": service, "min_level": "WARN"},
                    {"min_level": "ERROR"},
                    {"service_name": service},
                    {"level": "ERROR", "environment": "production"},
                ]
            )
            if rng.random() < 0.3:
                filter_.pop("service_name", None)
                group_by = ["service_name"]
        else:
            filter_ = rng.choice(
                [
                    {"search": rng.choice(WORDS)},
                    {"service_name": service, "search": rng.choice(WORDS)},
                    {"metadata": {"status": 500}},
                ]
            )
        specs.append(
            {
                "tenant_id": tenant,
                "name": f"bench rule {i}",
                "filter": filter_,
                "threshold": rng.choice([1, 5, 50, 500]),
                "window_mins": rng.choice([5, 15, 60]),
                "condition": "above" if rng.random() < 0.9 else "below",
                "group_by": group_by,
            }
        )
    return specs


def insert_rules(settings: Settings, specs: list[dict[str, Any]]) -> None:
    with psycopg.connect(settings.postgres_conninfo()) as conn:
        conn.execute(
            "DELETE FROM alert_events WHERE alert_id IN "
            "(SELECT id FROM log_alerts WHERE name LIKE 'bench rule %')"
        )
        conn.execute("DELETE FROM log_alerts WHERE name LIKE 'bench rule %'")
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO log_alerts (id, tenant_id, name, filter, condition, threshold, "
                "window_mins, severity, channels, group_by, cooldown_mins, enabled) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, 'warning', '[]', %s, 0, true)",
                [
                    (
                        uuid.uuid4(),
                        s["tenant_id"],
                        s["name"],
                        Jsonb(s["filter"]),
                        s["condition"],
                        s["threshold"],
                        s["window_mins"],
                        s["group_by"],
                    )
                    for s in specs
                ],
            )


def postgres_cpu(conn: psycopg.Connection, database: str) -> float:
    """CPU seconds used so far by the backends of `database`."""
    pids = [
        r[0]
        for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,))
    ]
    return sum(cpu_seconds(pid) for pid in pids)


async def rounds(loaded: Loaded, n_rounds: int) -> tuple[list[float], list[float], list[int]]:
    """Wall seconds, PostgreSQL CPU seconds and state changes of each round."""
    settings = replace(loaded.settings, db_pool_max=8, redis_key_prefix="bench-alerts")
    pool = make_pool(settings, name="bench-alerts", min_size=4, max_size=8)
    await pool.open()
    redis = make_redis(settings)
    deps = RoundDeps(settings, pool, redis, RedisKeys.from_settings(settings))
    walls, cpus, changes = [], [], []
    try:
        with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as watch:
            watch.execute("UPDATE log_alerts SET evaluated_tick = 0")
            interval = settings.alert_eval_interval_seconds
            for i in range(n_rounds):
                now = loaded.end + timedelta(seconds=interval * i)
                cpu = postgres_cpu(watch, settings.postgres_db)
                started = time.perf_counter()
                report = await evaluate_round(deps, now)
                walls.append(time.perf_counter() - started)
                cpus.append(postgres_cpu(watch, settings.postgres_db) - cpu)
                changes.append(len(report.changes))
                assert not report.failed, report.failed
    finally:
        await redis.aclose()
        await pool.close()
    return walls, cpus, changes


async def counts_alone(loaded: Loaded) -> tuple[float, float]:
    """The baseline: every rule's count alone (wall seconds, PostgreSQL CPU seconds)."""
    settings = loaded.settings
    pool = make_pool(settings, name="bench-counts", min_size=1, max_size=2)
    await pool.open()
    try:
        with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as watch:
            cur = watch.execute(
                f"SELECT {RULE_COLUMNS} FROM log_alerts WHERE name LIKE 'bench rule %%'"
            )
            rules = [rule_from_row(row) for row in cur.fetchall()]
            cpu = postgres_cpu(watch, settings.postgres_db)
            started = time.perf_counter()
            for rule in rules:
                window = Window.ending_at(loaded.end, rule.window_mins)
                async with tenant_scope(pool, rule.tenant_id) as conn:
                    await count_rule(conn, rule, window)
            return time.perf_counter() - started, postgres_cpu(watch, settings.postgres_db) - cpu
    finally:
        await pool.close()


class Receiver:
    """A webhook receiver on 127.0.0.1: the arrival time of each rule's first firing."""

    def __init__(self) -> None:
        self.first_firing: dict[str, float] = {}
        self.arrived = asyncio.Event()
        self.port = free_port()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ValueError):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            body = msgspec.json.decode(await reader.readexactly(length))
            if body["status"] == "firing":
                self.first_firing.setdefault(body["alert"]["id"], time.time())
                self.arrived.set()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            await writer.drain()
        writer.close()


async def latency(admin: Settings, rules: int, interval: int, spread: float) -> list[float]:
    """Seconds from the 202 of the request that crosses each rule's threshold to its
    webhook."""
    receiver = Receiver()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", receiver.port)
    logs = Path(tempfile.mkdtemp(prefix="mlog-bench-alerts-"))
    with fresh_database(admin, "alerts") as settings:
        port = free_port()
        config = replace(settings, server_port=port, alert_eval_interval_seconds=interval,
                         auth_mode="trusted_header")  # fmt: skip
        services = [
            Service(module, service_env(config), logs)
            for module in ("services.writer", "services.gateway", "services.evaluator")
        ]
        url = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(f"{url}/ready")).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
                ids = []
                for i in range(rules):
                    tenant = uuid.uuid4()
                    made = await http.post(
                        f"{url}/api/v1/alerts",
                        headers={"X-Tenant-ID": str(tenant)},
                        json={
                            "name": f"latency {i}",
                            "filter": {"service_name": "checkout", "level": "ERROR"},
                            "threshold": 5,
                            "window_mins": 5,
                            "channels": [
                                {"type": "webhook", "url": f"http://127.0.0.1:{receiver.port}/"}
                            ],
                        },
                    )
                    made.raise_for_status()
                    ids.append((tenant, made.json()["id"]))
                sent: dict[str, float] = {}
                rng = random.Random(7)

                async def cross(tenant: uuid.UUID, rule_id: str) -> None:
                    await asyncio.sleep(rng.uniform(0, spread))
                    entries = [
                        {"service_name": "checkout", "level": "ERROR", "message": f"boom {n}"}
                        for n in range(5)
                    ]
                    answer = await http.post(
                        f"{url}/api/v1/logs/batch",
                        headers={"X-Tenant-ID": str(tenant)},
                        json={"entries": entries},
                    )
                    answer.raise_for_status()
                    sent[rule_id] = time.time()

                await asyncio.gather(*(cross(t, r) for t, r in ids))
                deadline = time.monotonic() + interval + 120
                while len(receiver.first_firing) < rules and time.monotonic() < deadline:
                    receiver.arrived.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(receiver.arrived.wait(), timeout=1)
        finally:
            for service in services:
                service.close()
            server.close()
    missing = rules - len(receiver.first_firing)
    if missing:
        print(f"  {missing} rule(s) never notified within interval + 120 s (logs in {logs})")
    return [receiver.first_firing[r] - sent[r] for r in receiver.first_firing if r in sent]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--latency-rules", type=int, default=30)
    parser.add_argument("--interval", type=int, default=10, help="ALERT_EVAL_INTERVAL")
    parser.add_argument("--spread", type=float, default=30.0, help="seconds to cross over")
    args = parser.parse_args()
    loaded = from_arguments(args)
    specs = rule_specs(loaded, args.rules, args.seed)
    insert_rules(loaded.settings, specs)
    raw = sum(1 for s in specs if "search" in s["filter"] or "metadata" in s["filter"])
    print(
        f"{args.rules} rules over {len(loaded.tenants)} tenants of {loaded.spec.rows:,} rows "
        f"({args.rules - raw} rollup-backed, {raw} counting rows); data ends {loaded.end:%F %R}Z"
    )
    alone_wall, alone_cpu = asyncio.run(counts_alone(loaded))
    walls, cpus, changes = asyncio.run(rounds(loaded, args.rounds))
    print(f"{'':34}{'p50 s':>8}{'max s':>8}{'PG CPU s (p50)':>16}")
    print(f"{'one round (evaluate_round)':34}{statistics.median(walls):8.2f}{max(walls):8.2f}"
          f"{statistics.median(cpus):16.2f}   state changes per round: {changes}")  # fmt: skip
    print(f"{'baseline: the counts alone':34}{alone_wall:8.2f}{alone_wall:8.2f}{alone_cpu:16.2f}")
    print(f"round / counts alone: {statistics.median(walls) / alone_wall:.2f}x (target: < 5 s)")
    with psycopg.connect(loaded.settings.postgres_conninfo(), autocommit=True) as conn:
        conn.execute("DELETE FROM log_alerts WHERE name LIKE 'bench rule %'")
    if args.latency_rules:
        waits = asyncio.run(latency(loaded.settings, args.latency_rules, args.interval,
                                    args.spread))  # fmt: skip
        if waits:
            print(
                f"notification latency over {len(waits)} rules, ALERT_EVAL_INTERVAL="
                f"{args.interval}: p50 {statistics.median(waits):.1f} s, p99 "
                f"{percentile(waits, 99):.1f} s, max {max(waits):.1f} s "
                f"(target: < interval + 5 = {args.interval + 5} s)"
            )


if __name__ == "__main__":
    main()
