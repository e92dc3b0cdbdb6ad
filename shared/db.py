"""PostgreSQL access shared by the services: pools, bootstrap of role and database."""

from __future__ import annotations

import json
import logging
import select
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import msgspec
import psycopg
from psycopg import sql
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool

from shared.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Statement:
    """A query and the parameters of its placeholders: what the query and counting
    functions run, and what tests/test_query_plans.py EXPLAINs."""

    query: sql.Composed
    params: list[Any]


async def check_idle(conn: psycopg.AsyncConnection[Any]) -> None:
    """The pool's check of a connection it hands out, without a round trip unless there is
    something to suspect. An idle connection has nothing to read; one that has (the
    termination notice and end of file of a PostgreSQL that stopped) gets psycopg's own
    check, a round trip that raises when the connection is broken: the pool then replaces
    it and hands out another."""
    if conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    if poller.poll(0):
        await AsyncConnectionPool.check_connection(conn)


_json_decode = msgspec.json.Decoder().decode


def _json_loads(data: str | bytes) -> Any:
    """A json/jsonb value as psycopg's default (json.loads) reads it, several times faster
    (a page of 100 entries decodes 100 metadata objects): msgspec, and json.loads for the
    rare number msgspec refuses (one beyond a float, which json.loads reads as inf)."""
    try:
        return _json_decode(data)
    except msgspec.DecodeError:
        return json.loads(data)


def make_pool(
    settings: Settings,
    *,
    name: str,
    min_size: int | None = None,
    max_size: int | None = None,
    configure: Callable[[psycopg.AsyncConnection], Awaitable[None]] | None = None,
    timeout: float = 10.0,
) -> AsyncConnectionPool:
    """A pool that is not yet open: the owner opens it in its lifespan (`await pool.open()`)
    so that nothing connects at import time. Its connections read json with `_json_loads`,
    then run `configure`."""

    async def prepare(conn: psycopg.AsyncConnection) -> None:
        set_json_loads(_json_loads, conn)
        if configure is not None:
            await configure(conn)

    return AsyncConnectionPool(
        settings.postgres_conninfo(),
        min_size=settings.db_pool_min if min_size is None else min_size,
        max_size=settings.db_pool_max if max_size is None else max_size,
        open=False,
        name=name,
        # TimeZone UTC whatever the server's default: times come back with
        # datetime.timezone.utc, whose datetimes hash and compare in C (with the usual
        # default, Etc/UTC, each is a ZoneInfo call: ~1 µs a time, 2.6 ms per 1-minute
        # histogram over a day), and any time arithmetic in SQL is UTC's.
        kwargs={"application_name": f"minisource-{name}", "options": _options(settings)},
        # A connection broken by a PostgreSQL restart is found and replaced on checkout,
        # without a round trip per checkout (a tenant scope retries what it misses).
        check=check_idle,
        reconnect_timeout=0,
        timeout=timeout,
        configure=prepare,
    )


def _options(settings: Settings) -> str:
    """The session settings every pooled connection starts with."""
    options = "-c TimeZone=UTC"
    if settings.db_io_concurrency:
        options += f" -c effective_io_concurrency={settings.db_io_concurrency}"
    return options


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
        with psycopg.connect(settings.postgres_conninfo(), connect_timeout=5) as conn:
            reader_ready = _may_become_reader(conn)
        if not reader_ready:
            _bootstrap_reader_role(settings)
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
        _grant_reader_role(admin, settings.postgres_user)


# The role tenant-scoped transactions run as, subject to row-level security; created by
# sql/0003_tenancy.sql where the migrating role may, else by the bootstrap superuser.
READER_ROLE = "log_reader"


def _may_become_reader(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        """SELECT r.rolsuper OR EXISTS (
                      SELECT FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                       WHERE g.rolname = %s AND m.member = r.oid)
             FROM pg_roles r WHERE r.rolname = current_user""",
        (READER_ROLE,),
    ).fetchone()
    return bool(row and row[0])


def _grant_reader_role(admin: psycopg.Connection, login_role: str) -> None:
    """Create the reader role (idempotent: roles are cluster-wide, shared by databases)
    and make the service's login role a member, so `tenant_scope` may switch to it."""
    admin.execute(
        sql.SQL(
            "DO $$ BEGIN CREATE ROLE {} NOLOGIN; "
            "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        ).format(sql.Identifier(READER_ROLE))
    )
    admin.execute(
        sql.SQL("GRANT {} TO {}").format(sql.Identifier(READER_ROLE), sql.Identifier(login_role))
    )


def _bootstrap_reader_role(settings: Settings) -> None:
    try:
        with psycopg.connect(
            settings.postgres_conninfo(user=settings.postgres_bootstrap_user, dbname="postgres"),
            autocommit=True,
            connect_timeout=5,
        ) as admin:
            _grant_reader_role(admin, settings.postgres_user)
    except psycopg.Error as exc:
        # Not fatal here: a login role with CREATEROLE makes the role in the migration,
        # and otherwise the migration fails with the exact statements to run by hand.
        log.info(
            "cannot grant role %s as %s: %s", READER_ROLE, settings.postgres_bootstrap_user, exc
        )
        return
    log.info("role %s granted to %s", READER_ROLE, settings.postgres_user)


# The settings of a tenant's transaction (see `tenant_scope`), set in one statement. All
# are transaction-local (set_config(..., true) is SET LOCAL): the pooled connection goes
# back to the pool as its owner role, with no tenant and no timeout, whatever happened.
# JIT off: API reads run in milliseconds, and compiling them costs more than it saves (a
# 7-day stats request went from ~21 to ~50 ms once searches had run on the same
# connection and its queries started being JIT-compiled).
_TENANT_SETTINGS = (
    "SELECT set_config('app.tenant_id', %s, true), set_config('role', %s, true), "
    "set_config('jit', 'off', true)"
)
_TENANT_SETTINGS_WITH_TIMEOUT = _TENANT_SETTINGS + ", set_config('statement_timeout', %s, true)"
_TIMEOUT_SETTING = "SELECT set_config('statement_timeout', %s, true)"


@asynccontextmanager
async def tenant_scope(
    pool: AsyncConnectionPool, tenant_id: uuid.UUID, *, timeout_ms: int | None = None
) -> AsyncIterator[psycopg.AsyncConnection]:
    """A connection inside a transaction scoped to one tenant: every read of the query
    API runs in one. Queries filter by tenant explicitly (the first wall); the transaction
    also runs as READER_ROLE with `app.tenant_id` set, so row-level security (the second
    wall) hides every other tenant's rows even from a query that forgets its predicate.
    READER_ROLE reaches only the tables a migration put behind the wall with
    `SELECT enable_tenant_rls('table')` (sql/0003_tenancy.sql; log_entries through the
    parent only) and views granted to it; never api_keys or the audit trail.

    With `timeout_ms`, that is the statement timeout of the transaction."""
    params: list[Any] = [str(tenant_id), READER_ROLE]
    if timeout_ms is None:
        statement = _TENANT_SETTINGS
    else:
        statement, params = _TENANT_SETTINGS_WITH_TIMEOUT, [*params, f"{timeout_ms}ms"]
    async with _transaction(pool, statement, params) as conn:
        yield conn


@asynccontextmanager
async def bounded_transaction(
    pool: AsyncConnectionPool, timeout_ms: int
) -> AsyncIterator[psycopg.AsyncConnection]:
    """A connection inside a transaction (of the owner role, every tenant visible) whose
    statements stop after `timeout_ms`."""
    async with _transaction(pool, _TIMEOUT_SETTING, [f"{timeout_ms}ms"]) as conn:
        yield conn


@asynccontextmanager
async def _transaction(
    pool: AsyncConnectionPool, settings: str, params: Sequence[Any]
) -> AsyncIterator[psycopg.AsyncConnection]:
    """A pooled connection in a transaction begun by the `settings` statement.

    The pool's check (`check_idle`) costs no round trip and so cannot see every broken
    connection: one found broken by BEGIN or `settings` (PostgreSQL restarted since its
    last use) is dropped and the transaction begun once more on another, so that a
    restart fails no request. Nothing is retried once the body has started."""
    for last_attempt in (False, True):
        conn: psycopg.AsyncConnection | None = None
        began = False
        try:
            async with pool.connection() as conn, conn.transaction():
                # Prepared from the first use (fixed text, a plan that cannot change).
                await conn.execute(settings, params, prepare=True)
                began = True
                yield conn
            return
        except psycopg.OperationalError as exc:
            # A pool timeout is one too (conn is None): it is not retried either.
            if began or last_attempt or conn is None or not conn.broken:
                raise
            log.info("a pooled connection was broken, beginning on another: %s", _first_line(exc))


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().split("\n", 1)[0]


def delete_older_than(
    conn: psycopg.Connection, table: str, keep_seconds: float, batch: int = 5_000
) -> int:
    """Delete `table`'s rows whose `committed_at` is older than `keep_seconds`, in bounded
    batches (no long lock, no table-wide scan with an index on committed_at). Returns the
    rows deleted."""
    statement = sql.SQL(
        "DELETE FROM {table} WHERE ctid = ANY (ARRAY("
        "SELECT ctid FROM {table} WHERE committed_at < now() - make_interval(secs => %s) "
        "LIMIT %s))"
    ).format(table=sql.Identifier(table))
    deleted = 0
    while True:
        rowcount = conn.execute(statement, (keep_seconds, batch)).rowcount
        deleted += rowcount
        if rowcount < batch:
            return deleted
