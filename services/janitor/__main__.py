"""`python -m services.janitor`: the housekeeping loop, one active janitor at a time.

At start it applies the migrations (as every process does). Each run (every
JANITOR_INTERVAL) creates partitions ahead, forgets inbox entries old enough that their
stream messages can no longer be redelivered, prunes live-tail resume records past
TAIL_RESUME_WINDOW, and builds the search index of one closed day. Retention,
size quotas and archiving are added here by the retention issue. Beside it, every
ROLLUP_COMPACT_INTERVAL, settled minutes are compacted into the hourly and daily rollups
(shared/compaction.py); that step is safe to run from several janitors at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg

from services.janitor.search_index import build_search_index
from shared.compaction import compact
from shared.db import delete_older_than
from shared.lifecycle import sleep_or_stop, stop_on_signals
from shared.logsetup import start_process
from shared.migrate import ensure_partitions_ahead, migrate_when_reachable
from shared.settings import Settings
from shared.tail import prune_tail_batches

log = logging.getLogger("janitor")

_LOCK_KEY = 0x6A616E69  # "jani"
INBOX_KEEP_HOURS = 72


def run_once(settings: Settings) -> bool:
    """One housekeeping pass; False when another janitor holds the lock."""
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        locked = conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_KEY,)).fetchone()
        if not locked or not locked[0]:
            return False
        try:
            ensure_partitions_ahead(conn, settings)
            delete_older_than(conn, "ingest_inbox", INBOX_KEEP_HOURS * 3600)
            prune_tail_batches(conn, settings.tail_resume_window_seconds)
            build_search_index(conn)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return True


def compact_once(settings: Settings) -> int:
    with psycopg.connect(settings.postgres_conninfo()) as conn:
        return compact(conn)


async def _every(stop: asyncio.Event, name: str, seconds: int, work: Callable[[], object]) -> None:
    """Run `work` in a thread every `seconds` until `stop`; PostgreSQL errors are logged
    once and retried (sooner, up to 30 s apart) until it answers again."""
    failing = False
    while not stop.is_set():
        try:
            await asyncio.to_thread(work)
            if failing:
                log.info("%s recovered", name)
            failing = False
            delay: float = seconds
        except psycopg.Error as exc:
            if not failing:
                log.warning("%s failed, retrying: %s", name, exc)
            failing = True
            delay = min(30.0, seconds)
        await sleep_or_stop(stop, delay)


async def run(settings: Settings) -> None:
    stop = stop_on_signals()
    if await migrate_when_reachable(settings, stop) is None:
        return
    log.info(
        "janitor started, every %ss (rollup compaction every %ss)",
        settings.janitor_interval_seconds,
        settings.rollup_compact_interval_seconds,
    )
    await asyncio.gather(
        _every(stop, "janitor run", settings.janitor_interval_seconds, lambda: run_once(settings)),
        _every(
            stop,
            "rollup compaction",
            settings.rollup_compact_interval_seconds,
            lambda: compact_once(settings),
        ),
    )
    log.info("janitor stopped")


def main() -> None:
    settings = start_process("janitor")
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
