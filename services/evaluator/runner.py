"""What the scheduler runs at each tick: a round at the wall clock's `now`, the sender
woken when the round recorded changes, and an outage logged once, not at every tick."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from services.evaluator.rounds import UNAVAILABLE, RoundDeps, evaluate_round

log = logging.getLogger("evaluator")


class RoundRunner:
    """Calls `evaluate_round`; PostgreSQL or Redis being away skips the tick (the next
    one evaluates every rule this one did not write)."""

    def __init__(self, deps: RoundDeps, wake: asyncio.Event) -> None:
        self._deps = deps
        self._wake = wake
        self._paused = False

    async def __call__(self, now: datetime | None = None) -> None:
        try:
            report = await evaluate_round(self._deps, now or datetime.now(UTC))
        except UNAVAILABLE as exc:
            if not self._paused:
                log.warning("alert evaluation paused (%s: %s)", type(exc).__name__, exc)
                self._paused = True
            return
        if self._paused:
            log.info("alert evaluation resumed")
            self._paused = False
        if report.changes:
            # The outbox rows are committed: the sender can deliver them now rather than
            # at its next poll.
            self._wake.set()
