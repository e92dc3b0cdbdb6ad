"""Pacing the janitor's bulk work so that ingest keeps most of the machine.

Deleting a tenant-day or archiving it is a long string of short steps (a delete batch, a
row group of the archive). Run back to back, they keep a PostgreSQL backend and the
janitor busy for their whole length, and ingest, sharing the cores, slows by a quarter
(`make bench-retention`). After each step the janitor rests RETENTION_PAUSE_RATIO times
as long as the step took: at 2.0 it works a third of the time, and its share of the
machine follows the load it meets (a step that waits behind ingest takes longer, so the
rest after it does too). Nothing is held during a rest: every delete batch has
committed, and an archive's COPY only waits, its rows already read, to be sent on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

# A step that took longer (the database stalled, a lock waited) is not followed by a
# rest as long: a run stopped by SIGTERM waits at most this long in a rest.
MAX_REST_SECONDS = 1.0


class Pace:
    """Call `rest()` after each step: it sleeps `ratio` times the time since the last
    call (or since the Pace was made). A ratio of 0 never sleeps."""

    def __init__(
        self,
        ratio: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.ratio = ratio
        self._clock = clock
        self._sleep = sleep
        self._mark = clock()
        self.rested = 0.0  # seconds in total, reported by the benchmark

    def rest(self) -> None:
        if self.ratio > 0:
            seconds = min((self._clock() - self._mark) * self.ratio, MAX_REST_SECONDS)
            self._sleep(seconds)
            self.rested += seconds
        self._mark = self._clock()

    def over(self, steps: Iterable[T]) -> Iterator[T]:
        """The items of `steps`, with a rest before each next one: the step is reading
        an item and whatever the consumer does with it."""
        for item in steps:
            yield item
            self.rest()


UNPACED = Pace(0.0)
