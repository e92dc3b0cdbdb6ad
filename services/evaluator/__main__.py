"""`python -m services.evaluator`: evaluate alert rules every ALERT_EVAL_INTERVAL and send
their notifications, until SIGTERM.

Two tasks share one PostgreSQL pool: the scheduler (an arq worker whose cron runs a
round at every tick, services/evaluator/scheduler.py) and the notification sender
(services/evaluator/sender.py), woken after a round that recorded changes. Any number
of evaluators may run: they share each tick's rules and never evaluate one twice.
"""

from __future__ import annotations

import asyncio
import logging

from services.evaluator.metrics import REGISTRY
from services.evaluator.rounds import MAX_CONCURRENCY, RoundDeps
from services.evaluator.runner import RoundRunner
from services.evaluator.scheduler import run_scheduler
from services.evaluator.sender import run_sender
from shared.db import make_pool
from shared.kept_hours import KeptHours
from shared.lifecycle import stop_on_signals
from shared.logsetup import start_process
from shared.metrics import EVALUATOR_OFFSET, serve_worker_metrics
from shared.migrate import migrate_when_reachable
from shared.redis_conn import make_redis
from shared.redis_keys import RedisKeys
from shared.settings import Settings

log = logging.getLogger("evaluator")

SENDER_CONNECTIONS = 2


async def run(settings: Settings) -> None:
    stop = stop_on_signals()
    if await migrate_when_reachable(settings, stop) is None:
        return
    # Rounds count and write up to `concurrency` rules at once; the sender records its
    # deliveries' outcomes on the rest. A short checkout timeout: while PostgreSQL is
    # away a round fails fast and the next tick retries.
    concurrency = max(1, min(MAX_CONCURRENCY, settings.db_pool_max - SENDER_CONNECTIONS))
    pool = make_pool(
        settings,
        name="evaluator",
        min_size=1,
        max_size=concurrency + SENDER_CONNECTIONS,
        timeout=5.0,
    )
    await pool.open(wait=False)
    redis = make_redis(settings)
    kept_hours = KeptHours.from_settings(settings)
    wake = asyncio.Event()
    deps = RoundDeps(
        settings,
        pool,
        redis,
        RedisKeys.from_settings(settings),
        concurrency=concurrency,
        kept_hours=kept_hours,
    )
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(run_scheduler(settings, RoundRunner(deps, wake), stop))
            tasks.create_task(run_sender(settings, pool, stop, wake))
    finally:
        await kept_hours.aclose()
        await redis.aclose()
        await pool.close()
    log.info("evaluator stopped")


def main() -> None:
    settings = start_process("evaluator")
    if settings.log_level != "debug":
        # arq logs every job's start and end at INFO: a line per tick, not per change.
        logging.getLogger("arq").setLevel(logging.WARNING)
    with serve_worker_metrics(settings, EVALUATOR_OFFSET, REGISTRY):
        asyncio.run(run(settings))


if __name__ == "__main__":
    main()
