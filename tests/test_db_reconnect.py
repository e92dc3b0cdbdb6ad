"""Pooled connections broken by a PostgreSQL restart cost no failed request: the pool's
check (no round trip) replaces those whose socket shows the server went away, and a
transaction that still meets a broken connection on its first statement begins again,
once, on another (shared/db.py)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import psycopg
from litestar.testing import AsyncTestClient
from psycopg_pool import AsyncConnectionPool

from services.gateway.app import create_app
from shared.db import READER_ROLE, make_pool, tenant_scope
from shared.migrate import migrate
from tests.conftest import TENANT, tenant_headers
from tests.polling import wait_until
from tests.private_services import private_postgres

_WHO = "SELECT pg_backend_pid(), current_user, current_setting('app.tenant_id')"


async def _scoped_backend(pool: AsyncConnectionPool, tenant: uuid.UUID) -> tuple[Any, ...]:
    async with tenant_scope(pool, tenant, timeout_ms=1000) as conn:
        cur = await conn.execute(_WHO)
        row = await cur.fetchone()
        timeout = await (await conn.execute("SHOW statement_timeout")).fetchone()
    assert row is not None and timeout == ("1s",)
    return tuple(row)


async def _backend_gone(db: psycopg.Connection, pid: int) -> bool:
    row = db.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row == (0,)


async def test_a_query_after_postgres_restarted_answers_at_the_first_attempt(settings) -> None:
    with private_postgres() as pg:
        pg.create_database("mlog")
        config = replace(
            settings, postgres_host="127.0.0.1", postgres_port=pg.port, postgres_db="mlog"
        )
        migrate(config)
        params = {"start_time": "now-1h"}
        headers = {**tenant_headers(), "Cache-Control": "no-cache"}
        async with AsyncTestClient(app=create_app(config)) as client:
            before = await client.get("/api/v1/logs", params=params, headers=headers)
            assert before.status_code == 200, before.text
            pg.stop()
            pg.start()
            for _ in range(3):
                after = await client.get("/api/v1/logs", params=params, headers=headers)
                assert after.status_code == 200, after.text
                assert after.json()["entries"] == []


async def test_a_connection_broken_while_idle_is_replaced_by_the_pool_check(settings, db) -> None:
    pool = make_pool(settings, name="reconnect-test", min_size=1, max_size=1)
    await pool.open(wait=True)
    try:
        async with pool.connection() as conn:
            first = conn.info.backend_pid
        db.execute("SELECT pg_terminate_backend(%s)", (first,))
        # Gone from pg_stat_activity: it has sent its goodbye on the idle connection.
        await wait_until(lambda: _backend_gone(db, first), within=10, what="the backend to end")
        # A plain checkout (no retry around it): only the pool's check can save it.
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT pg_backend_pid()")
            assert (await cur.fetchone()) != (first,)
        assert (await _scoped_backend(pool, TENANT))[1:] == (READER_ROLE, str(TENANT))
    finally:
        await pool.close()


async def test_a_broken_connection_met_by_the_first_statement_is_replaced_once(
    settings, db
) -> None:
    # No check on checkout at all: only the tenant scope's own retry stands between the
    # broken connection and the request.
    pool = AsyncConnectionPool(
        settings.postgres_conninfo(), min_size=1, max_size=1, open=False, timeout=10
    )
    await pool.open(wait=True)
    try:
        first = (await _scoped_backend(pool, TENANT))[0]
        db.execute("SELECT pg_terminate_backend(%s)", (first,))
        pid, role, tenant = await _scoped_backend(pool, TENANT)
        assert pid != first
        assert (role, tenant) == (READER_ROLE, str(TENANT))
        assert await _backend_gone(db, first)
    finally:
        await pool.close()
