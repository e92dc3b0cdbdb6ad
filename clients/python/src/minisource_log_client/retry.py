"""What to do with a batch after an answer: done, send again (and when), split, or give
up on it. Pure functions of the answer, so every decision is testable without a server."""

from __future__ import annotations

import enum
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime


class Action(enum.Enum):
    DONE = "done"
    """2xx: the gateway has the batch (a replayed Idempotency-Key answers 2xx too)."""
    RETRY = "retry"
    """429, 5xx, or no answer: send the same batch, same Idempotency-Key, later."""
    SPLIT = "split"
    """413 for a batch of several entries: send each half on its own."""
    REJECT = "reject"
    """Any other answer: sending the same bytes again cannot succeed."""


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter; a `Retry-After` from the gateway wins.

    `give_up_after` bounds how long one batch is retried (seconds from its first
    attempt); None retries until `close()` runs out of time. While a batch is retried,
    new records wait in the bounded queue, so the bound, not the retrying, limits memory.
    """

    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 300.0
    give_up_after: float | None = None

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Attempt 0 is the first retry. Equal jitter: half the exponential step fixed,
        half random, so clients that failed together do not come back together."""
        step = min(self.max_delay, self.base_delay * 2.0 ** min(attempt, 32))
        return step / 2 + (rng or random).uniform(0, step / 2)

    def decide(
        self,
        status: int | None,
        retry_after: str | None,
        attempt: int,
        records: int,
        rng: random.Random | None = None,
    ) -> Decision:
        """`status` None: no answer (connection refused, reset, timed out)."""
        if status is not None and 200 <= status < 300:
            return Decision(Action.DONE)
        if status == 413 and records > 1:
            return Decision(Action.SPLIT)
        if status is not None and status != 429 and status < 500:
            return Decision(Action.REJECT)
        wait = parse_retry_after(retry_after)
        if wait is None:
            return Decision(Action.RETRY, self.backoff(attempt, rng))
        # Never earlier than asked; up to 10 % later so a crowd told "2 s" spreads out.
        wait = min(wait, self.max_retry_after)
        return Decision(Action.RETRY, wait * (rng or random).uniform(1.0, 1.1))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
