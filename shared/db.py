"""PostgreSQL access shared by the services: pools, bootstrap of role and database."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from shared.settings import Settings

log = logging.getLogger(__name__)


def make_pool(
    settings: Settings,
    *,
    name: str,
    min_size: int | None = None,
    max_size: int | None = None,
    configure: Callable[[psycopg.AsyncConnection], Awaitable[None]] | None = None,
) -> AsyncConnectionPool:
    """A pool that is not yet open: the owner opens it in its lifespan (`await pool.open()`)
    so that nothing connects at import time."""
    return AsyncConnectionPool(
        settings.postgres_conninfo(),
        min_size=settings.db_pool_min if min_size is None else min_size,
        max_size=settings.db_pool_max if max_size is None else max_size,
        open=False,
        name=name,
        kwargs={"application_name": f"minisource-{name}"},
        # A connection broken by a PostgreSQL restart is found and replaced on checkout.
        check=AsyncConnectionPool.check_connection,
        reconnect_timeout=0,
        timeout=10.0,
        configure=configure,
    )


def partition_unit(settings: Settings) -> str:
    """The partition interval the database was created with ('day' or 'month')."""
    with psycopg.connect(settings.postgres_conninfo()) as conn:
        row = conn.execute(
            "SELECT value FROM log_settings WHERE key = 'partition_interval'"
        ).fetchone()
    return str(row[0]) if row else settings.partition_interval


def bootstrap_database(settings: Settings) -> None:
    """Create POSTGRES_USER and POSTGRES_DB when they do not exist yet.

    Done as POSTGRES_BOOTSTRAP_USER (a superuser on a local install). Where that is not
    possible (managed PostgreSQL, no superuser) the error says what to create by hand.
    """
    try:
        psycopg.connect(settings.postgres_conninfo(), connect_timeout=5).close()
        return
    except psycopg.OperationalError as exc:
        first_error = exc
    try:
        admin = psycopg.connect(
            settings.postgres_conninfo(user=settings.postgres_bootstrap_user, dbname="postgres"),
            autocommit=True,
            connect_timeout=5,
        )
    except psycopg.OperationalError as exc:
        raise RuntimeError(
            f"cannot connect as {settings.postgres_user} ({first_error}) nor as "
            f"{settings.postgres_bootstrap_user} to create it ({exc}); create role "
            f"{settings.postgres_user} and database {settings.postgres_db} by hand"
        ) from exc
    with admin:
        role_exists = admin.execute(
            "SELECT 1 FROM pg_roles WHERE rolname = %s", (settings.postgres_user,)
        ).fetchone()
        if not role_exists:
            admin.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(settings.postgres_user),
                    sql.Literal(settings.postgres_password or None),
                )
            )
            log.info("created role %s", settings.postgres_user)
        db_exists = admin.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (settings.postgres_db,)
        ).fetchone()
        if not db_exists:
            admin.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(settings.postgres_db), sql.Identifier(settings.postgres_user)
                )
            )
            log.info("created database %s", settings.postgres_db)


@asynccontextmanager
async def tenant_scope(
    pool: AsyncConnectionPool, tenant_id: uuid.UUID
) -> AsyncIterator[psycopg.AsyncConnection]:
    """A connection inside a transaction scoped to one tenant: every read of the query
    API runs in one. The tenant is also set as `app.tenant_id` for the transaction, which
    row-level security policies (the second wall) check; queries still filter by tenant
    explicitly (the first wall)."""
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant_id),))
        yield conn
