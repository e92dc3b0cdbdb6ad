"""Waiting for a condition with a deadline, for effects that announce no event."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_until(
    condition: Callable[[], T | Awaitable[T]],
    *,
    within: float,
    what: str,
    interval: float = 0.05,
) -> T:
    """Poll `condition` until it returns something truthy; return that, or fail with
    `what` (and the last value seen) after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what} (last: {value!r})")
        await asyncio.sleep(interval)
