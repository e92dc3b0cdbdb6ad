"""Two writers storing the first rows of a new day at the same moment: both must get the
partition, neither an error (sql/0012_partition_race.sql)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import psycopg

from shared.settings import Settings
from tests.polling import wait_until

NEW_DAY = datetime(2030, 1, 2, 12, tzinfo=UTC)  # no partition exists for it yet

WAITING_ON_ADVISORY_LOCK = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND NOT granted AND database = (
    SELECT oid FROM pg_database WHERE datname = current_database())
"""


async def test_a_second_caller_waiting_while_the_first_creates_the_partition_gets_it(
    settings: Settings, db: psycopg.Connection
) -> None:
    conninfo = settings.postgres_conninfo()
    async with (
        await psycopg.AsyncConnection.connect(conninfo) as first,
        await psycopg.AsyncConnection.connect(conninfo) as second,
    ):
        # The first writer's transaction creates the table and holds the creation lock
        # until it commits, as the writer's COPY transaction does.
        await first.execute("SELECT ensure_log_partition(%s)", (NEW_DAY,))
        waiting = asyncio.create_task(second.execute("SELECT ensure_log_partition(%s)", (NEW_DAY,)))
        await wait_until(
            lambda: db.execute(WAITING_ON_ADVISORY_LOCK).fetchone() == (1,),
            within=10,
            what="the second caller waiting on the partition lock",
        )
        await first.commit()
        cursor = await asyncio.wait_for(waiting, 10)
        assert await cursor.fetchone() == ("log_entries_p20300102",)
        await second.commit()
    assert db.execute("SELECT to_regclass('log_entries_p20300102')").fetchone() is not None
