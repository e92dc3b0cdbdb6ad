"""What every pooled connection starts with (shared/db.py, `make_pool`): UTC times and
the read-ahead of bitmap heap scans (DB_IO_CONCURRENCY), or the server's own value."""

from __future__ import annotations

from dataclasses import replace

import psycopg

from shared.db import make_pool
from shared.settings import Settings


async def _session(settings: Settings) -> tuple[str, str]:
    pool = make_pool(settings, name="sessions", min_size=0, max_size=1)
    await pool.open()
    try:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT current_setting('TimeZone'), current_setting('effective_io_concurrency')"
            )
            row = await cur.fetchone()
    finally:
        await pool.close()
    assert row is not None
    return str(row[0]), str(row[1])


async def test_pooled_connections_read_ahead_as_configured(
    settings: Settings, db: psycopg.Connection
) -> None:
    assert await _session(replace(settings, db_io_concurrency=48)) == ("UTC", "48")
    # 0: what a connection without it gets from the server.
    server = db.execute("SHOW effective_io_concurrency").fetchone()
    assert server is not None
    assert await _session(replace(settings, db_io_concurrency=0)) == ("UTC", server[0])
