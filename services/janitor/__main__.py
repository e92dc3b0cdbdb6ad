"""`python -m services.janitor`: the housekeeping loop, one active janitor at a time.

At start it applies the migrations (as every process does). Each run (every
JANITOR_INTERVAL) creates partitions ahead, forgets inbox entries old enough that their
stream messages can no longer be redelivered, prunes live-tail resume records past
TAIL_RESUME_WINDOW, rewrites a closed day in tenant order with its search index,
packs closed days' minute cells (services/janitor/count_packing.py), indexes today's
past hours for search, and counts the words of past hours
(services/janitor/word_counts.py).
Every RETENTION_INTERVAL, under the same lock, a retention run applies the retention policies
and size quotas (services/janitor/retention.py); within one janitor the two never run at
once (each waits for the other instead of skipping its turn). Beside them, every
ROLLUP_COMPACT_INTERVAL, settled minutes are compacted into the hourly and daily rollups
(shared/compaction.py); that step is safe to run from several janitors at once.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable

import psycopg

from services.janitor import metrics, restore
from services.janitor.closed_partitions import settle_closed_partition
from services.janitor.count_packing import pack_closed_minutes
from services.janitor.lock import janitor_lock
from services.janitor.open_day_search import index_open_day
from services.janitor.retention import retention_once
from services.janitor.word_counts import count_words
from shared.compaction import compact
from shared.db import delete_older_than
from shared.lifecycle import sleep_or_stop, stop_on_signals
from shared.logsetup import start_process
from shared.metrics import JANITOR_OFFSET, serve_worker_metrics
from shared.migrate import ensure_partitions_ahead, migrate_when_reachable
from shared.settings import Settings
from shared.tail import prune_tail_batches
from shared.tracing import tracer

log = logging.getLogger("janitor")

INBOX_KEEP_HOURS = 72


class Rewrites:
    """The connection rewriting a closed partition, packing closed days' minutes,
    indexing today's past hours or counting past hours' words, for SIGTERM to cut
    short: each takes tens of seconds per million rows, longer than a stop grace period.
    A rewrite cancelled is rolled back whole (services/janitor/closed_partitions.py), as
    is a tenant-hour's packing (services/janitor/count_packing.py) and a span's word
    count (services/janitor/word_counts.py); an index build leaves an invalid index that
    the next run drops (services/janitor/open_day_search.py)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        self._stopped = False

    def run(self, conn: psycopg.Connection) -> None:
        """One closed partition settled, closed days' minutes packed, today's past hours
        indexed and past hours' words counted on `conn`, unless stopped before or during
        them."""

        def count_past_words(conn: psycopg.Connection) -> None:
            count_words(conn, keep_going=lambda: not self._stopped)

        def pack_minutes(conn: psycopg.Connection) -> None:
            pack_closed_minutes(conn, keep_going=lambda: not self._stopped)

        steps = (settle_closed_partition, pack_minutes, index_open_day, count_past_words)
        for step in steps:
            with self._lock:
                if self._stopped:
                    return
                self._conn = conn
            try:
                step(conn)
            finally:
                with self._lock:
                    self._conn = None

    def stop(self) -> None:
        """No rewrite from now on, and the one in progress cancelled (it then raises
        QueryCanceled in its thread, after rolling back)."""
        with self._lock:
            self._stopped = True
            if self._conn is not None:
                self._conn.cancel_safe(timeout=5)


def run_once(settings: Settings, rewrites: Rewrites) -> bool:
    """One housekeeping pass; False when another janitor holds the lock."""
    with (
        psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn,
        janitor_lock(conn) as held,
    ):
        if not held:
            return False
        ensure_partitions_ahead(conn, settings)
        delete_older_than(conn, "ingest_inbox", INBOX_KEEP_HOURS * 3600)
        prune_tail_batches(conn, settings.tail_resume_window_seconds)
        rewrites.run(conn)
    return True


async def _cancel_rewrites_on(stop: asyncio.Event, rewrites: Rewrites) -> None:
    await stop.wait()
    await asyncio.to_thread(rewrites.stop)


def retention_run(settings: Settings, stop: asyncio.Event) -> bool:
    """One retention run on the wall clock, stopped early by SIGTERM or after one
    RETENTION_INTERVAL of work (the next run continues): the housekeeping run waits for
    it, and partitions ahead must not wait for a long backlog. False when another janitor
    holds the lock."""
    deadline = time.monotonic() + settings.retention_interval_seconds

    def keep_going() -> bool:
        return not stop.is_set() and time.monotonic() < deadline

    return retention_once(settings, keep_going=keep_going) is not None


def _one_at_a_time(lock: threading.Lock, work: Callable[[], object]) -> Callable[[], object]:
    """`work` run while holding `lock`: the janitor's runs share one advisory lock, and
    two of them in one process would each find it taken by the other."""

    def run() -> object:
        with lock:
            return work()

    return run


def compact_once(settings: Settings) -> int:
    with psycopg.connect(settings.postgres_conninfo()) as conn:
        steps = compact(conn)
    metrics.COMPACTION_STEPS.inc(steps)
    return steps


# The metrics' `task` label of each run `_every` names.
_TASKS = {
    "janitor run": "housekeeping",
    "retention run": "retention",
    "rollup compaction": "compaction",
}


def _ran(task: str, outcome: str, started: float) -> None:
    metrics.RUNS.labels(task, outcome).inc()
    metrics.RUN_DURATION.labels(task).observe(time.perf_counter() - started)


async def _every(stop: asyncio.Event, name: str, seconds: int, work: Callable[[], object]) -> None:
    """Run `work` in a thread every `seconds` until `stop`; PostgreSQL errors are logged
    once and retried (sooner, up to 30 s apart) until it answers again. Each run is a
    span named `name` (README, "Tracing"): its statements are traced inside it."""
    failing = False
    task = _TASKS[name]
    while not stop.is_set():
        started = time.perf_counter()
        try:
            # to_thread copies the context: the thread's statements are the span's children.
            with tracer("minisource.janitor").start_as_current_span(name):
                acted = await asyncio.to_thread(work)
            # False: another janitor holds the lock and acts (run_once, retention_run).
            _ran(task, "skipped" if acted is False else "ok", started)
            if failing:
                log.info("%s recovered", name)
            failing = False
            delay: float = seconds
        except psycopg.Error as exc:
            if stop.is_set():  # a rewrite cancelled by the stop: rolled back, not a failure
                log.info("%s cut short by the stop: %s", name, exc)
                break
            _ran(task, "failed", started)
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
        "janitor started, every %ss (retention every %ss, rollup compaction every %ss)",
        settings.janitor_interval_seconds,
        settings.retention_interval_seconds,
        settings.rollup_compact_interval_seconds,
    )
    acting = threading.Lock()
    rewrites = Rewrites()
    await asyncio.gather(
        _cancel_rewrites_on(stop, rewrites),
        _every(
            stop,
            "janitor run",
            settings.janitor_interval_seconds,
            _one_at_a_time(acting, lambda: run_once(settings, rewrites)),
        ),
        _every(
            stop,
            "retention run",
            settings.retention_interval_seconds,
            _one_at_a_time(acting, lambda: retention_run(settings, stop)),
        ),
        _every(
            stop,
            "rollup compaction",
            settings.rollup_compact_interval_seconds,
            lambda: compact_once(settings),
        ),
    )
    log.info("janitor stopped")


def main() -> None:
    # `python -m services.janitor restore …`: a one-shot command, not the loop.
    if sys.argv[1:2] == ["restore"]:
        restore.main(sys.argv[2:])
        return
    settings = start_process("janitor")
    with serve_worker_metrics(settings, JANITOR_OFFSET, metrics.REGISTRY):
        asyncio.run(run(settings))


if __name__ == "__main__":
    main()
