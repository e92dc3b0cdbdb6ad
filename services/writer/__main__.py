"""`python -m services.writer`: drain the ingest streams into PostgreSQL until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

from psycopg import AsyncConnection

from services.writer.consumer import StreamConsumer
from services.writer.loop import Writer
from services.writer.metrics import REGISTRY
from services.writer.store import register_dumpers
from services.writer.tail import TailPublisher
from shared.db import make_pool, partition_unit
from shared.lifecycle import retry_until_ready, stop_on_signals
from shared.logsetup import start_process
from shared.metrics import WRITER_OFFSET, serve_worker_metrics
from shared.migrate import migrate
from shared.redis_conn import make_redis
from shared.redis_keys import RedisKeys
from shared.settings import Settings

log = logging.getLogger("writer")

# Batches stored at once by one process, each by its own consumer of the group. While one
# waits for PostgreSQL (COPY, rollups, COMMIT) the other decodes and formats the next
# batch: `make bench-ingest` measured 56% of raw COPY with one, 74-77% with two (same
# runs, rows stamped up to 10 minutes back).
PIPELINES = 2


async def configure_connection(conn: AsyncConnection) -> None:
    register_dumpers(conn)
    # Messages are acknowledged after COMMIT returns, so COMMIT must mean flushed: a
    # server or role default of synchronous_commit=off would lose acknowledged batches
    # in a PostgreSQL crash (ARCHITECTURE.md, pitfall 11).
    await conn.execute("SET synchronous_commit = on")
    # The batch statements are short and run thousands of times: JIT compiling costs more.
    await conn.execute("SET jit = off")
    await conn.commit()


async def run(settings: Settings) -> None:
    stop = stop_on_signals()

    def prepare() -> str:
        migrate(settings)
        return partition_unit(settings)

    unit = await retry_until_ready("PostgreSQL", lambda: asyncio.to_thread(prepare), stop)
    if unit is None:
        return
    # A short checkout timeout: while PostgreSQL is away the writer's own backoff paces
    # the retries, instead of each attempt hanging in the pool.
    pool = make_pool(
        settings,
        name="writer",
        min_size=1,
        max_size=PIPELINES,
        configure=configure_connection,
        timeout=2.0,
    )
    await pool.open(wait=False)
    redis = make_redis(settings, blocking=True)
    keys = RedisKeys.from_settings(settings)
    tail = TailPublisher(redis, keys)
    name = settings.writer_name or f"{socket.gethostname()}-{os.getpid()}"
    writers = [
        Writer(
            settings,
            pool,
            # Stable names per pipeline: a restarted writer re-reads each one's pending list.
            StreamConsumer(redis, keys, f"{name}/{i}", settings.writer_claim_idle_ms),
            partition_unit=unit,
            tail=tail,
        )
        for i in range(PIPELINES)
    ]
    try:
        async with asyncio.TaskGroup() as pipelines:
            for writer in writers:
                pipelines.create_task(writer.run(stop))
    finally:
        await redis.aclose()
        await pool.close()


def main() -> None:
    settings = start_process("writer")
    with serve_worker_metrics(settings, WRITER_OFFSET, REGISTRY):
        asyncio.run(run(settings))


if __name__ == "__main__":
    main()
