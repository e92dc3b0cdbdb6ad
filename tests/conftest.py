"""Real PostgreSQL and Redis for every test, each test in its own database and key prefix.

The machine's services are used (POSTGRES_HOST/PORT, REDIS_HOST/PORT, defaults local);
where no PostgreSQL or Redis answers but a Docker engine runs, testcontainers starts
them. A template database is migrated once per session; each test gets a copy of it
(CREATE DATABASE ... TEMPLATE, ~0.1 s) and a unique Redis key prefix, both removed after.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import psycopg
import pytest
from litestar.testing import AsyncTestClient
from psycopg import sql
from psycopg_pool import AsyncConnectionPool
from redis import Redis as SyncRedis

from services.gateway.admin.tenancy import first_admin_key
from services.gateway.app import create_app
from services.writer.__main__ import configure_connection
from services.writer.consumer import StreamConsumer
from services.writer.loop import Writer
from shared.db import make_pool
from shared.migrate import migrate
from shared.redis_conn import make_redis
from shared.redis_keys import RedisKeys
from shared.settings import Settings
from tests.services_env import ensure_services


@pytest.fixture(scope="session")
def base_settings() -> Iterator[Settings]:
    endpoints = ensure_services()
    settings = replace(
        Settings.from_env(
            {
                "POSTGRES_USER": os.environ.get("TEST_POSTGRES_USER", "postgres"),
                "POSTGRES_PASSWORD": os.environ.get("TEST_POSTGRES_PASSWORD", ""),
                "LOG_LEVEL": "warning",
            }
        ),
        postgres_host=endpoints.postgres_host,
        postgres_port=endpoints.postgres_port,
        redis_host=endpoints.redis_host,
        redis_port=endpoints.redis_port,
        db_pool_min=0,
        db_pool_max=4,
    )
    template = f"mlog_tpl_{os.getpid()}"
    admin = psycopg.connect(settings.postgres_conninfo(dbname="postgres"), autocommit=True)
    admin.execute(
        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(template))
    )
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(template)))
    migrate(replace(settings, postgres_db=template))
    try:
        yield replace(settings, postgres_db=template)
    finally:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(template))
        )
        admin.close()
        endpoints.close()


def clone_database(base: Settings, name: str) -> None:
    with psycopg.connect(base.postgres_conninfo(dbname="postgres"), autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(base.postgres_db)
            )
        )


def drop_database(base: Settings, name: str) -> None:
    with psycopg.connect(base.postgres_conninfo(dbname="postgres"), autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def drop_keys(settings: Settings, match: str = "*") -> None:
    """Delete the Redis keys under the settings' prefix that `match` (a SCAN pattern
    after the prefix) selects: all of them by default."""
    client = SyncRedis(host=settings.redis_host, port=settings.redis_port, db=settings.redis_db)
    with contextlib.closing(client):
        keys = list(client.scan_iter(match=f"{settings.redis_key_prefix}:{match}", count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture
def settings(base_settings: Settings) -> Iterator[Settings]:
    """Settings pointing at a fresh database and a fresh Redis key prefix."""
    suffix = uuid.uuid4().hex[:12]
    name = f"mlog_t_{suffix}"
    clone_database(base_settings, name)
    # trusted_header: tests name their tenant with X-Tenant-ID (tenant_headers); the
    # api_key mode has its own fixtures (api_settings, api_client, admin_key).
    settings = replace(
        base_settings,
        postgres_db=name,
        redis_key_prefix=f"test-{suffix}",
        auth_mode="trusted_header",
    )
    try:
        yield settings
    finally:
        drop_database(base_settings, name)
        drop_keys(settings)


@pytest.fixture
def db(settings: Settings) -> Iterator[psycopg.Connection]:
    """A plain autocommit connection to the test's database, for assertions."""
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        yield conn


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[AsyncConnectionPool]:
    """A one-connection pool on the test's database, for `tenant_scope`."""
    pool = make_pool(settings, name="test", min_size=0, max_size=1)
    await pool.open()
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    async with AsyncTestClient(app=create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    """AUTH_MODE=api_key on the test's database and key prefix, keys never cached (a
    revocation is seen at once)."""
    return replace(settings, auth_mode="api_key", auth_cache_seconds=0.0)


@pytest.fixture
async def api_client(api_settings: Settings) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    async with AsyncTestClient(app=create_app(api_settings)) as test_client:
        yield test_client


@pytest.fixture
async def admin_key(api_settings: Settings) -> str:
    """The database's bootstrap admin key (tenant `system`, scope admin)."""
    key = await first_admin_key(api_settings)
    assert key is not None
    return key


@contextlib.asynccontextmanager
async def in_process_writer(settings: Settings, name: str = "test-writer") -> AsyncIterator[Writer]:
    """A Writer with its own pool and Redis client, closed on exit."""
    pool = make_pool(
        settings, name="writer-test", min_size=0, max_size=2, configure=configure_connection
    )
    await pool.open()
    redis = make_redis(settings, blocking=True)
    consumer = StreamConsumer(redis, RedisKeys.from_settings(settings), name, 60_000)
    await consumer.ensure_groups()
    try:
        yield Writer(settings, pool, consumer, partition_unit=settings.partition_interval)
    finally:
        await redis.aclose()
        await pool.close()


@pytest.fixture
async def writer(settings: Settings) -> AsyncIterator[Writer]:
    """An in-process writer; tests call `await writer.drain()` to store what is queued."""
    async with in_process_writer(settings) as started:
        yield started


TENANT = uuid.UUID("123e4567-e89b-12d3-a456-426614174000")
OTHER_TENANT = uuid.UUID("0f4f3b3e-1d5c-4b53-9d52-6a1f0e9b2c11")


def tenant_headers(tenant: uuid.UUID = TENANT) -> dict[str, str]:
    return {"X-Tenant-ID": str(tenant), "Content-Type": "application/json"}
