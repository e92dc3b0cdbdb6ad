"""The clock of the evaluator: an arq worker whose cron job calls `on_tick` at the start
of every tick (services/evaluator/schedule.py). arq knows nothing of alerts: it only
decides when; `on_tick` (services/evaluator/runner.py) decides what.

How arq is run here, inside our own event loop:

- `handle_signals=False`: the process's SIGTERM handler (shared/lifecycle.py) sets our
  stop event; arq's own would cancel its main task behind our back.
- `worker.main()` runs as a task of ours; on stop the worker stops picking jobs, a round
  in progress gets STOP_GRACE_SECONDS to finish, then it is cancelled (safe: a round
  writes each rule in its own transaction; unwritten rules are evaluated next tick),
  and what still runs STOP_GRACE_SECONDS later is logged with its stack and left.
- arq's main loop ends at the first Redis error. Each replica then rebuilds its worker
  with capped, jittered backoff; nothing exits, nothing crash-loops.
- `unique=False`: every replica enqueues one round per tick into the shared queue
  (REDIS_KEY_PREFIX:evaluator:queue, random job ids), and `max_jobs=1` makes each
  replica run one round at a time, so with N replicas N rounds start per tick and share
  the rules through their claims (services/evaluator/claims.py). Exactly once per rule
  and tick comes from those claims in PostgreSQL, not from arq's uniqueness.
- A job that starts one interval or more after its time is skipped: the next tick's job
  is already due, and a backlog of late jobs must not turn into back-to-back rounds.

arq keeps a job's body under `arq:job:<id>` (and in-progress/retry markers beside it),
outside our prefix; the ids are random and the keys are deleted when the job ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from arq.connections import ArqRedis
from arq.cron import cron
from arq.typing import StartupShutdown
from arq.worker import Worker
from redis.exceptions import RedisError

from services.evaluator.schedule import cron_times
from shared.lifecycle import Backoff, sleep_or_stop
from shared.redis_keys import RedisKeys
from shared.settings import Settings

log = logging.getLogger("evaluator")

OnTick = Callable[[datetime], Awaitable[None]]

STOP_GRACE_SECONDS = 5.0
# A round that runs this long is cancelled (arq's job timeout); its unwritten rules are
# evaluated at the next tick.
ROUND_TIMEOUT_SECONDS = 300
CRON_NAME = "evaluate_round"


async def _tick(ctx: dict[str, Any]) -> None:
    """The cron job: a round at the wall clock, unless the job is a whole interval late."""
    interval: int = ctx["interval"]
    late = time.time() - ctx["score"] / 1000
    if late >= interval:
        log.debug("round job %s skipped: %.1f s late", ctx["job_id"], late)
        return
    on_tick: OnTick = ctx["on_tick"]
    await on_tick(datetime.now(UTC))


def make_worker(
    settings: Settings,
    on_tick: OnTick,
    on_startup: StartupShutdown | None = None,
) -> Worker:
    """An arq worker with the round's cron job, on its own Redis client (closed by
    `stop_worker`)."""
    interval = settings.alert_eval_interval_seconds
    queue = RedisKeys.from_settings(settings).evaluator_queue
    times = cron_times(interval)
    job = cron(
        _tick,
        name=CRON_NAME,
        second=times.second,
        minute=times.minute,
        unique=False,
        timeout=ROUND_TIMEOUT_SECONDS,
        max_tries=1,
        keep_result=0,
    )
    redis = ArqRedis(
        host=settings.redis_host,
        port=settings.redis_port,
        db=settings.redis_db,
        password=settings.redis_password or None,
        protocol=2,  # the reply shapes arq parses (ARCHITECTURE pitfall 1)
        socket_timeout=5.0,
        socket_connect_timeout=5.0,
        default_queue_name=queue,
    )
    return Worker(
        cron_jobs=[job],
        queue_name=queue,
        redis_pool=redis,
        handle_signals=False,
        max_jobs=1,
        # Jobs are picked up within a poll: small against the interval.
        poll_delay=min(0.5, interval / 4),
        keep_result=0,
        log_results=False,
        # Tick starts are fixed UTC seconds/minutes (schedule.cron_times).
        timezone=UTC,
        ctx={"on_tick": on_tick, "interval": interval},
        on_startup=on_startup,
    )


async def stop_worker(worker: Worker, main: asyncio.Task[None], grace: float) -> None:
    """Stop picking jobs, give a running round `grace` seconds, cancel what is left and
    close the worker's Redis client. Never raises for Redis being away."""
    worker.allow_pick_jobs = False
    running = [t for t in worker.tasks.values() if not t.done()]
    if running:
        await asyncio.wait(running, timeout=grace)
    tasks = [main, *worker.tasks.values()]
    for task in tasks:
        task.cancel()
    # Bounded: a task that outlives its cancellation is named with where it waits, and
    # left behind, rather than holding the process past its SIGTERM.
    _, stuck = await asyncio.wait(tasks, timeout=grace)
    for task in stuck:
        where = io.StringIO()
        task.print_stack(file=where)
        log.warning("an arq task still runs %.0f s after it was cancelled: %s", grace,
                    where.getvalue())  # fmt: skip
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.debug("arq task ended with %r", task.exception())
    with contextlib.suppress(RedisError, OSError):
        await worker.pool.delete(worker.health_check_key)
    with contextlib.suppress(RedisError, OSError):
        await worker.pool.aclose()


async def run_scheduler(settings: Settings, on_tick: OnTick, stop: asyncio.Event) -> None:
    """Run the round's cron until `stop` is set, rebuilding the worker after Redis
    errors. Logs once when it runs and once per outage."""
    backoff = Backoff(cap=10.0)
    state = "starting"

    async def started(ctx: dict[Any, Any]) -> None:
        nonlocal state
        backoff.reset()
        if state != "running":
            log.info(
                "alert evaluation scheduled every %s s",
                settings.alert_eval_interval_seconds,
                extra={"fields": {"queue": RedisKeys.from_settings(settings).evaluator_queue}},
            )
            state = "running"

    while not stop.is_set():
        worker = make_worker(settings, on_tick, started)
        main = asyncio.create_task(worker.main())
        # arq's own stop path (close/handle_sig) cancels `main_task`: point it at ours.
        worker.main_task = main
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({main, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        failure = None
        if main.done() and not main.cancelled():
            failure = main.exception() or RuntimeError("the arq worker stopped by itself")
        await stop_worker(worker, main, STOP_GRACE_SECONDS)
        if failure is None:
            continue
        if state != "waiting":
            log.warning(
                "alert scheduling paused (%s: %s); retrying", type(failure).__name__, failure
            )
            state = "waiting"
        await sleep_or_stop(stop, backoff.next_delay())
    log.info("alert scheduling stopped")
