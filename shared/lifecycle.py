"""What every background process shares: a stop event wired to SIGTERM/SIGINT, and
waiting for a dependency with backoff instead of crashing at start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (Ctrl-C) in the running loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


@dataclass
class Backoff:
    """Capped exponential backoff with full jitter; `reset()` after a success."""

    base: float = 0.1
    cap: float = 5.0
    attempt: int = 0

    def next_delay(self) -> float:
        self.attempt += 1
        return random.uniform(0, min(self.cap, self.base * 2**self.attempt))

    def reset(self) -> None:
        self.attempt = 0


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake at once when `stop` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def retry_until_ready(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    stop: asyncio.Event,
    *,
    cap: float = 5.0,
) -> T | None:
    """Call `attempt` until it succeeds (capped exponential backoff with jitter), or
    return None when `stop` is set first. Logs once per outage, not per try."""
    backoff = Backoff(cap=cap)
    warned = False
    while not stop.is_set():
        try:
            return await attempt()
        except Exception as exc:
            if not warned:
                log.warning("waiting for %s: %s", what, exc)
                warned = True
        await sleep_or_stop(stop, backoff.next_delay())
    return None
