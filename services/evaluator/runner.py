"""What the scheduler runs at each tick: a round at the wall clock's `now`, the sender
woken when the round recorded changes, and an outage logged once, not at every tick."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from services.evaluator import metrics
from services.evaluator.rounds import UNAVAILABLE, RoundDeps, RoundReport, evaluate_round

log = logging.getLogger("evaluator")


class RoundRunner:
    """Calls `evaluate_round`; PostgreSQL or Redis being away skips the tick (the next
    one evaluates every rule this one did not write)."""

    def __init__(self, deps: RoundDeps, wake: asyncio.Event) -> None:
        self._deps = deps
        self._wake = wake
        self._paused = False

    async def __call__(self, now: datetime | None = None) -> None:
        started = time.perf_counter()
        try:
            report = await evaluate_round(self._deps, now or datetime.now(UTC))
        except UNAVAILABLE as exc:
            metrics.ROUNDS.labels("unavailable").inc()
            if not self._paused:
                log.warning("alert evaluation paused (%s: %s)", type(exc).__name__, exc)
                self._paused = True
            return
        _count(report, time.perf_counter() - started)
        if self._paused:
            log.info("alert evaluation resumed")
            self._paused = False
        if report.changes:
            # The outbox rows are committed: the sender can deliver them now rather than
            # at its next poll.
            self._wake.set()


def _count(report: RoundReport, seconds: float) -> None:
    metrics.ROUNDS.labels("completed").inc()
    metrics.ROUND_DURATION.observe(seconds)
    metrics.EVALUATIONS.labels("evaluated").inc(len(report.evaluated))
    metrics.EVALUATIONS.labels("skipped").inc(len(report.skipped))
    metrics.EVALUATIONS.labels("failed").inc(len(report.failed))
    for change in report.changes:
        metrics.STATE_CHANGES.labels(change.kind).inc()
