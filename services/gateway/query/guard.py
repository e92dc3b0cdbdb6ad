"""Protect PostgreSQL from the query API: few queries at a time, none running long.

Every read of the query API goes through `QueryGuard.read`: it waits a bounded time for
one of QUERY_CONCURRENCY slots and opens the tenant's transaction (`tenant_scope`) with
QUERY_TIMEOUT_MS as its statement timeout. A full house or a query cut by
the timeout is a 503 that says what to do, never a hung request. On top of that, one
tenant may hold at most its `max_concurrent_queries` of them (`TenantQuerySlots`, 429).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from services.gateway.metrics import QUERY_REFUSED, QUERY_SLOT_WAIT
from shared.db import bounded_transaction, tenant_scope
from shared.errors import RateLimited, Unavailable
from shared.settings import Settings

log = logging.getLogger("gateway.query")


class QueryGuard:
    """A per-process limit on concurrent queries plus a per-statement time limit."""

    def __init__(
        self, pool: AsyncConnectionPool, *, concurrency: int, queue_wait_ms: int, timeout_ms: int
    ) -> None:
        self.pool = pool
        self._slots = asyncio.Semaphore(concurrency)
        self._queue_wait = queue_wait_ms / 1000
        self.timeout_ms = timeout_ms

    @classmethod
    def from_settings(cls, pool: AsyncConnectionPool, settings: Settings) -> QueryGuard:
        return cls(
            pool,
            concurrency=settings.query_concurrency,
            queue_wait_ms=settings.query_queue_wait_ms,
            timeout_ms=settings.query_timeout_ms,
        )

    @asynccontextmanager
    async def read(self, tenant_id: uuid.UUID) -> AsyncIterator[AsyncConnection[Any]]:
        """A connection in the tenant's read transaction, with the timeout set."""
        async with (
            self._slot(),
            tenant_scope(self.pool, tenant_id, timeout_ms=self.timeout_ms) as conn,
        ):
            yield conn

    @asynccontextmanager
    async def read_all_tenants(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A connection that sees every tenant (admin figures only), in a transaction with
        the same slot and timeout as any query."""
        async with self._slot(), bounded_transaction(self.pool, self.timeout_ms) as conn:
            yield conn

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """One of QUERY_CONCURRENCY slots for the body, and its errors as 503s."""
        waiting = time.perf_counter()
        try:
            async with asyncio.timeout(self._queue_wait):
                await self._slots.acquire()
        except TimeoutError:
            QUERY_REFUSED.labels("busy").inc()
            raise Unavailable(
                "too many queries are running on this gateway (QUERY_CONCURRENCY); retry "
                "shortly, and narrow the time range or add filters so queries finish sooner",
                retry_after=1,
            ) from None
        QUERY_SLOT_WAIT.observe(time.perf_counter() - waiting)
        try:
            yield
        except psycopg.errors.QueryCanceled:
            QUERY_REFUSED.labels("timeout").inc()
            raise Unavailable(
                f"the query ran longer than {self.timeout_ms} ms (QUERY_TIMEOUT_MS) and was "
                "stopped: narrow the time range (start_time/end_time) or add filters "
                "(service_name, level, trace_id, ...)"
            ) from None
        except (PoolTimeout, psycopg.OperationalError) as exc:
            log.warning("query store unavailable: %s", exc)
            QUERY_REFUSED.labels("store_unavailable").inc()
            raise Unavailable(
                "the log store is unavailable; retry shortly", retry_after=2
            ) from None
        finally:
            self._slots.release()


class TenantQuerySlots:
    """Queries running now, per tenant, in this process (one event loop: no lock)."""

    def __init__(self) -> None:
        self._running: dict[uuid.UUID, int] = {}

    @contextmanager
    def hold(self, tenant_id: uuid.UUID, limit: int) -> Iterator[None]:
        running = self._running.get(tenant_id, 0)
        if running >= limit:
            raise RateLimited(
                f"this tenant already runs {running} queries at once (max_concurrent_queries "
                f"= {limit}); retry when one has finished",
                retry_after=1,
                extra={"limit": "max_concurrent_queries", "limit_value": limit},
            )
        self._running[tenant_id] = running + 1
        try:
            yield
        finally:
            left = self._running[tenant_id] - 1
            if left:
                self._running[tenant_id] = left
            else:
                del self._running[tenant_id]
