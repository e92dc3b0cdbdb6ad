"""Starting and stopping: migrations, partitions ahead, settings that stop a process at
start, and the one run command (`python -m services`, what `make run` runs)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from litestar.testing import AsyncTestClient
from psycopg import sql

from services.gateway.app import create_app
from services.writer.__main__ import configure_connection
from services.writer.consumer import StreamConsumer
from services.writer.loop import STOP_GRACE_SECONDS, Writer
from shared.db import make_pool
from shared.migrate import migrate, migration_files
from shared.redis_conn import make_redis
from shared.redis_keys import RedisKeys
from shared.settings import Settings
from shared.supervision import EXIT_CANNOT_LISTEN
from tests.conftest import drop_database, drop_keys, tenant_headers
from tests.pipeline import make_batches, pending_ids, post_batch, row_count
from tests.polling import wait_until
from tests.private_services import PrivatePostgres
from tests.processes import REPO, Service, free_port, service_env

SEED_CURL_BODY = {"service_name": "my-service", "level": "INFO", "message": "Hello World"}

_SCHEMA_SQL = """
SELECT 'relation', c.relname, c.relkind::text
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'
UNION ALL
SELECT 'column', table_name || '.' || column_name,
       data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '')
  FROM information_schema.columns WHERE table_schema = 'public'
UNION ALL
SELECT 'index', indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'
UNION ALL
SELECT 'constraint', conrelid::regclass::text || '.' || conname, pg_get_constraintdef(c.oid)
  FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = 'public'
UNION ALL
SELECT 'function', p.proname, md5(pg_get_functiondef(p.oid))
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'public' AND p.prokind IN ('f', 'p')
UNION ALL
SELECT 'migration', version::text, name || ' ' || checksum || ' ' || applied_at::text
  FROM schema_migrations
UNION ALL
SELECT 'setting', key, value FROM log_settings
ORDER BY 1, 2, 3
"""


@pytest.fixture
def empty_database(base_settings: Settings) -> Iterator[Settings]:
    """Settings pointing at a database with nothing in it yet (no template)."""
    name = f"mlog_e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base_settings.postgres_conninfo(dbname="postgres"), autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield replace(base_settings, postgres_db=name)
    finally:
        drop_database(base_settings, name)


def _schema(settings: Settings) -> list[tuple[str, str, str]]:
    with psycopg.connect(settings.postgres_conninfo()) as conn:
        return [(r[0], r[1], r[2]) for r in conn.execute(_SCHEMA_SQL)]


def _partitions(settings: Settings) -> set[str]:
    with psycopg.connect(settings.postgres_conninfo()) as conn:
        return {
            r[0]
            for r in conn.execute(
                "SELECT inhrelid::regclass::text FROM pg_inherits "
                "WHERE inhparent = 'log_entries'::regclass"
            )
        }


def test_migrations_apply_once_and_a_second_run_changes_nothing(empty_database) -> None:
    every_version = [v for v, _ in migration_files()]
    results: list[list[int]] = []

    def run() -> None:
        results.append(migrate(empty_database))

    # Two processes starting together: they serialise on the advisory lock.
    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(results[0] + results[1]) == every_version
    before = _schema(empty_database)

    assert migrate(empty_database) == []
    assert _schema(empty_database) == before
    recorded = [row[1] for row in before if row[0] == "migration"]
    assert sorted(int(v) for v in recorded) == every_version


def test_daily_partitions_exist_from_today_through_partitions_ahead(empty_database) -> None:
    settings = replace(empty_database, partitions_ahead=3)
    migrate(settings)
    today = datetime.now(UTC).date()
    expected = {f"log_entries_p{today + timedelta(days=i):%Y%m%d}" for i in range(4)}
    assert expected <= _partitions(settings)


def _month_start(year: int, month: int, ahead: int = 0) -> datetime:
    index = year * 12 + month - 1 + ahead
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


async def test_monthly_partitions_are_made_ahead_and_on_demand(empty_database) -> None:
    settings = replace(
        empty_database,
        partition_interval="month",
        partitions_ahead=3,
        ingest_max_age_days=60,
        auth_mode="trusted_header",
        redis_key_prefix=f"test-{uuid.uuid4().hex[:12]}",
    )
    migrate(settings)
    now = datetime.now(UTC)
    ahead = {f"log_entries_p{_month_start(now.year, now.month, i):%Y%m}" for i in range(4)}
    assert ahead <= _partitions(settings)

    last_month_end = _month_start(now.year, now.month) - timedelta(hours=1)
    body = {**SEED_CURL_BODY, "timestamp": last_month_end.isoformat()}
    pool = make_pool(settings, name="t", min_size=0, max_size=2, configure=configure_connection)
    await pool.open()
    redis = make_redis(settings, blocking=True)
    try:
        async with AsyncTestClient(app=create_app(settings)) as client:
            response = await client.post("/api/v1/logs", json=body, headers=tenant_headers())
        assert response.status_code == 202, response.text
        consumer = StreamConsumer(redis, RedisKeys.from_settings(settings), "t", 60_000)
        await consumer.ensure_groups()
        await Writer(settings, pool, consumer, partition_unit="month").drain()
    finally:
        await redis.aclose()
        await pool.close()
        drop_keys(settings)
    with psycopg.connect(settings.postgres_conninfo()) as conn:
        rows = conn.execute("SELECT tableoid::regclass::text FROM log_entries").fetchall()
        interval = conn.execute(
            "SELECT value FROM log_settings WHERE key = 'partition_interval'"
        ).fetchone()
    assert rows == [(f"log_entries_p{last_month_end:%Y%m}",)]
    assert interval == ("month",)


@pytest.mark.parametrize(
    ("module", "variable", "value"),
    [
        ("services.gateway", "SERVER_PORT", "abc"),
        ("services.gateway", "STREAM_SHARDS", "0"),
        ("services.writer", "WRITER_BATCH_ROWS", "-5"),
        ("services", "PARTITION_INTERVAL", "week"),
    ],
)
def test_invalid_setting_stops_the_process_naming_the_variable(
    base_settings, module, variable, value
) -> None:
    env = {**service_env(base_settings), variable: value}
    done = subprocess.run(
        [sys.executable, "-m", module], env=env, cwd=REPO, capture_output=True, timeout=60
    )
    assert done.returncode != 0
    assert variable in done.stderr.decode(), done.stderr.decode()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # Fields after the command (which may hold spaces) are after the last ')'.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _still_there(pids: list[int]) -> list[int]:
    return [pid for pid in pids if Path(f"/proc/{pid}").exists()]


async def test_run_command_serves_stores_and_stops_on_ctrl_c(base_settings, tmp_path) -> None:
    """`python -m services` with the caller's SERVER_PORT, a database that does not exist
    yet and its own key prefix: it creates the database, serves, stores the seed's curl
    example, and Ctrl-C (SIGINT to the process group) stops every process with code 0."""
    suffix = uuid.uuid4().hex[:12]
    port = free_port()
    config = replace(
        base_settings,
        postgres_db=f"mlog_run_{suffix}",
        redis_key_prefix=f"test-run-{suffix}",
        server_port=port,
        auth_mode="trusted_header",
    )
    try:
        with Service("services", service_env(config), tmp_path) as supervisor:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

                async def ready() -> bool:
                    assert supervisor.running(), supervisor.output()
                    try:
                        return (await http.get("/ready")).status_code == 200
                    except httpx.HTTPError:
                        return False

                await wait_until(ready, within=60, what="the gateway to be ready")
                response = await http.post(
                    "/api/v1/logs", json=SEED_CURL_BODY, headers=tenant_headers()
                )
                assert response.status_code == 202, response.text
                entry_id = uuid.UUID(response.json()["id"])

            with psycopg.connect(config.postgres_conninfo(), autocommit=True) as db:
                await wait_until(
                    lambda: db.execute(
                        "SELECT message FROM log_entries WHERE id = %s", (entry_id,)
                    ).fetchone(),
                    within=30,
                    what="the entry to be stored",
                )
            children = _children(supervisor.pid)
            assert len(children) == 4, supervisor.output()  # gateway, writer, evaluator, janitor

            os.killpg(supervisor.pid, signal.SIGINT)  # to the group: what Ctrl-C does
            assert supervisor.wait(30) == 0, supervisor.output()
            assert f"listening on http://127.0.0.1:{port}" in supervisor.output()
            assert _still_there(children) == []
    finally:
        drop_database(base_settings, config.postgres_db)
        drop_keys(config)


KEY_LINE = "bootstrap admin API key, shown this once"


def _printed_key(output: str) -> str | None:
    """The bootstrap admin key a process printed, if it did."""
    lines = [line for line in output.splitlines() if KEY_LINE in line]
    return lines[-1].rsplit(" ", 1)[1] if lines else None


async def _answers(http: httpx.AsyncClient, process: Service, path: str) -> bool:
    assert process.running(), process.output()[-3000:]
    try:
        return (await http.get(path)).status_code == 200
    except httpx.HTTPError:
        return False


def _bootstrap_keys(settings: Settings) -> int:
    with psycopg.connect(settings.postgres_conninfo()) as conn:
        row = conn.execute("SELECT count(*) FROM api_keys WHERE bootstrap").fetchone()
    return int(row[0]) if row else 0


@pytest.mark.parametrize("module", ["services", "services.gateway"])
def test_port_in_use_stops_at_once_naming_it_and_makes_no_key(settings, tmp_path, module) -> None:
    """`make run` on a port another instance holds: a non-zero exit naming the port and
    SERVER_PORT, not "listening", not a key that would then be tried on the other one."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = replace(settings, server_port=port, auth_mode="api_key")
        with Service(module, service_env(config), tmp_path) as process:
            code = process.wait(60)
            output = process.output()
    assert code == EXIT_CANNOT_LISTEN, output
    assert f"port {port} on 127.0.0.1 is already in use" in output
    assert "SERVER_PORT" in output
    assert "listening on" not in output
    assert KEY_LINE not in output and "mlk_" not in output
    assert _bootstrap_keys(config) == 0


@pytest.mark.parametrize(
    "module", ["services.gateway", "services.writer", "services.evaluator", "services.janitor"]
)
async def test_each_process_started_alone_applies_the_migrations(
    empty_database, tmp_path, module
) -> None:
    """As compose starts them: each on its own brings a new database up to date."""
    config = replace(
        empty_database,
        server_port=free_port(),
        redis_key_prefix=f"test-alone-{uuid.uuid4().hex[:12]}",
        auth_mode="trusted_header",
    )
    every_version = [v for v, _ in migration_files()]
    try:
        with (
            Service(module, service_env(config), tmp_path) as process,
            psycopg.connect(config.postgres_conninfo(), autocommit=True) as db,
        ):

            def migrated() -> bool:
                assert process.running(), process.output()[-3000:]
                try:
                    rows = db.execute("SELECT version FROM schema_migrations ORDER BY 1")
                except psycopg.errors.UndefinedTable:
                    return False
                return [r[0] for r in rows] == every_version

            await wait_until(migrated, within=60, what=f"{module} to apply the migrations")
    finally:
        drop_keys(config)


async def test_gateway_alone_serves_before_postgres_then_prints_a_working_admin_key_once(
    base_settings, tmp_path
) -> None:
    """Compose's case, PostgreSQL late: the gateway serves at once (ingest needs only
    Redis), then migrates the new database and prints a bootstrap admin key that works."""
    postgres = PrivatePostgres()  # initialised, not started yet
    port = free_port()
    config = replace(
        base_settings,
        postgres_host="127.0.0.1",
        postgres_port=postgres.port,
        postgres_user="postgres",
        postgres_password="",
        postgres_db="postgres",
        redis_key_prefix=f"test-late-{uuid.uuid4().hex[:12]}",
        server_port=port,
        auth_mode="api_key",
    )
    try:
        with Service("services.gateway", service_env(config), tmp_path) as gateway:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                await wait_until(
                    lambda: _answers(http, gateway, "/live"), within=60, what="the gateway"
                )
                assert KEY_LINE not in gateway.output()
                postgres.start()
                key = await wait_until(
                    lambda: _printed_key(gateway.output()), within=60, what="the admin key"
                )
                tenants = await http.get(
                    "/api/v1/admin/tenants", headers={"Authorization": f"Bearer {key}"}
                )
                assert tenants.status_code == 200, tenants.text
            assert gateway.output().count(KEY_LINE) == 1
            assert _bootstrap_keys(config) == 1
    finally:
        postgres.remove()
        drop_keys(config)


async def test_run_command_prints_the_admin_key_once_and_it_works(settings, tmp_path) -> None:
    """Under `python -m services` the gateway prints the key (the supervisor no longer
    does): once, and it is a working admin key."""
    port = free_port()
    config = replace(settings, server_port=port, auth_mode="api_key")
    with Service("services", service_env(config), tmp_path) as supervisor:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            await wait_until(
                lambda: "[minisource] listening on" in supervisor.output(),
                within=60,
                what="listening",
            )
            key = await wait_until(
                lambda: _printed_key(supervisor.output()), within=60, what="the admin key"
            )
            tenants = await http.get(
                "/api/v1/admin/tenants", headers={"Authorization": f"Bearer {key}"}
            )
            assert tenants.status_code == 200, tenants.text
        os.killpg(supervisor.pid, signal.SIGINT)
        assert supervisor.wait(30) == 0, supervisor.output()
        assert supervisor.output().count(KEY_LINE) == 1


# The documented bound of a stopping gateway (README, "Graceful shutdown"): the drain,
# then up to uvicorn's timeout_graceful_shutdown (10 s) for requests in flight; a few
# seconds more for the process to close its pools and exit.
GATEWAY_IN_FLIGHT_SECONDS = 10.0
EXIT_MARGIN_SECONDS = 5.0
LOAD_CLIENTS = 4


@dataclass
class _Load:
    """What the clients learnt: the ids of every entry answered 202, and the entries of
    requests whose outcome they never learnt (the connection broke before an answer)."""

    accepted: list[uuid.UUID] = field(default_factory=list)
    unknown_entries: int = 0
    refused: dict[int, int] = field(default_factory=dict)


async def _send_until_refused(
    port: int, batches: Iterator[list[dict[str, Any]]], load: _Load, stop: asyncio.Event
) -> None:
    """One client posting batches back to back until the gateway stops accepting
    connections (or the batches, or the test's patience, run out)."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        for entries in batches:
            if stop.is_set():
                return
            try:
                response = await post_batch(http, entries)
            except httpx.ConnectError:
                return  # the drain is over: nothing accepts connections any more
            except httpx.HTTPError:
                load.unknown_entries += len(entries)
                continue
            if response.status_code == 202:
                load.accepted.extend(uuid.UUID(i) for i in response.json()["ids"])
            else:
                load.refused[response.status_code] = load.refused.get(response.status_code, 0) + 1


async def test_sigterm_to_gateway_and_writer_during_ingest_loses_no_accepted_log(
    settings, db, tmp_path
) -> None:
    """`docker compose stop` during ingest: the gateway and a writer get SIGTERM together
    while clients keep sending. /ready fails at once, every request answered 202 is kept
    (stored by the stopping writer, or left on the stream, pending or not, for the next
    one), both exit 0 within their bounds, and nothing is stored twice."""
    port = free_port()
    # A stable writer name, as a restarted container has (its hostname, pid 1): the next
    # writer re-reads at once what the stopped one released.
    config = replace(settings, server_port=port, shutdown_drain_seconds=1.0, writer_name="w1")
    env = service_env(config)
    load = _Load()
    batches = iter(make_batches(600, 20, seed=19))
    stop_sending = asyncio.Event()
    with (
        Service("services.gateway", env, tmp_path) as gateway,
        Service("services.writer", env, tmp_path) as writer,
    ):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            await wait_until(lambda: _answers(http, gateway, "/ready"), within=60, what="ready")
            clients = [
                asyncio.create_task(_send_until_refused(port, batches, load, stop_sending))
                for _ in range(LOAD_CLIENTS)
            ]
            try:
                # Under load: requests accepted and the writer storing them.
                await wait_until(
                    lambda: len(load.accepted) >= 2_000 and row_count(db) > 0,
                    within=60,
                    what="ingest under way",
                )
                gateway.signal(signal.SIGTERM)
                writer.signal(signal.SIGTERM)
                await wait_until(
                    lambda: _status_is(http, "/ready", 503), within=2, what="/ready 503"
                )
                # Waited for in threads: the clients (this loop) must go on sending and
                # reading answers while the processes stop.
                bound = config.shutdown_drain_seconds + GATEWAY_IN_FLIGHT_SECONDS
                writer_code, gateway_code = await asyncio.gather(
                    asyncio.to_thread(writer.wait, STOP_GRACE_SECONDS + EXIT_MARGIN_SECONDS),
                    asyncio.to_thread(gateway.wait, bound + EXIT_MARGIN_SECONDS),
                )
                assert writer_code == 0, writer.output()[-3000:]
                assert gateway_code == 0, gateway.output()[-3000:]
                # The clients end on their own once nothing accepts connections.
                await asyncio.wait_for(asyncio.gather(*clients), timeout=30)
            finally:
                stop_sending.set()
                for task in clients:
                    task.cancel()
                await asyncio.gather(*clients, return_exceptions=True)
        for process in (gateway, writer):
            assert "Traceback" not in process.output(), process.output()[-3000:]
    assert set(load.refused) <= {503}, load.refused  # only backpressure, never an error

    with Service("services.writer", env, tmp_path):
        await wait_until(
            lambda: set(load.accepted) <= _stored_ids(db) and not pending_ids(settings),
            within=60,
            what="every accepted entry stored by the next writer",
        )
    rows = [r[0] for r in db.execute("SELECT id FROM log_entries")]
    assert len(rows) == len(set(rows)), "an entry was stored twice"
    # Rows beyond the accepted ones can only come from requests whose answer was lost.
    assert len(rows) - len(load.accepted) <= load.unknown_entries


async def _status_is(http: httpx.AsyncClient, path: str, status: int) -> bool:
    return (await http.get(path)).status_code == status


def _stored_ids(db: psycopg.Connection) -> set[uuid.UUID]:
    return {r[0] for r in db.execute("SELECT id FROM log_entries")}
