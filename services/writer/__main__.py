"""`python -m services.writer`: drain the ingest streams into PostgreSQL until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys

import msgspec
from psycopg import AsyncConnection
from psycopg.types.json import set_json_dumps

from services.writer.consumer import StreamConsumer
from services.writer.loop import Writer
from shared.db import make_pool, partition_unit
from shared.lifecycle import retry_until_ready, stop_on_signals
from shared.logsetup import configure_logging
from shared.migrate import migrate
from shared.redis_conn import make_redis
from shared.settings import Settings, SettingsError
from shared.streams import StreamKeys

log = logging.getLogger("writer")


def _json_dumps(obj: object) -> bytes:
    # Metadata arrives as JSON text already encoded by the gateway: pass it through.
    return obj if isinstance(obj, bytes) else msgspec.json.encode(obj)


async def configure_connection(conn: AsyncConnection) -> None:
    set_json_dumps(_json_dumps, context=conn)


async def run(settings: Settings) -> None:
    stop = stop_on_signals()

    def prepare() -> str:
        migrate(settings)
        return partition_unit(settings)

    unit = await retry_until_ready("PostgreSQL", lambda: asyncio.to_thread(prepare), stop)
    if unit is None:
        return
    pool = make_pool(
        settings, name="writer", min_size=1, max_size=2, configure=configure_connection
    )
    await pool.open(wait=False)
    redis = make_redis(settings, blocking=True)
    name = settings.writer_name or f"{socket.gethostname()}-{os.getpid()}"
    consumer = StreamConsumer(
        redis, StreamKeys.from_settings(settings), name, settings.writer_claim_idle_ms
    )
    writer = Writer(settings, pool, consumer, partition_unit=unit)
    try:
        await writer.run(stop)
    finally:
        await redis.aclose()
        await pool.close()


def main() -> None:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        sys.exit(str(exc))
    configure_logging(settings, "writer")
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
