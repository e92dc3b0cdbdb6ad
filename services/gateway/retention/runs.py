"""The retention status: what the janitor recorded of its runs (retention_runs), read
as the owner (the table spans every tenant; only the operator reads it)."""

from __future__ import annotations

from datetime import timedelta

from psycopg_pool import AsyncConnectionPool

from services.gateway.retention import store
from services.gateway.retention.models import RetentionStatusOut


async def retention_status(
    pool: AsyncConnectionPool, interval_seconds: int, *, limit: int, before_id: int | None
) -> RetentionStatusOut:
    async with pool.connection() as conn, conn.transaction():
        latest = await store.recent_runs(conn, limit=1, before_id=None)
        runs = await store.recent_runs(conn, limit=limit, before_id=before_id)
    last = latest[0] if latest else None
    return RetentionStatusOut(
        interval_seconds=interval_seconds,
        last_run=last,
        # When the janitor means to start again; a time in the past says it is late
        # (stopped, or a run longer than the interval).
        next_run_at=last.started_at + timedelta(seconds=interval_seconds) if last else None,
        runs=runs[:limit],
        limit=limit,
        has_more=len(runs) > limit,
    )
