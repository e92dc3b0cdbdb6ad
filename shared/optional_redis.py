"""A Redis that only speeds things up (the query cache, kept hours): never in the way.

Every call is bounded by a short timeout. A failure returns FAILED rather than raising,
and Redis is then left alone for a few seconds, so a dead or hung server costs the
callers almost nothing. The outage is logged when it starts and when it ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

# After a failure, how long Redis stays out of the way before it is tried again.
BACKOFF_SECONDS = 5.0
FAILED: Any = object()  # what `call` returns when Redis failed


class OptionalRedis:
    """`client=None` is a Redis that is never there (the feature is turned off)."""

    def __init__(
        self,
        client: Redis | None,
        *,
        what: str,
        timeout: float,
        backoff: float = BACKOFF_SECONDS,
    ) -> None:
        self.client = client
        self._log = logging.getLogger(what.replace(" ", "_"))
        self._what = what
        self._timeout = timeout
        self._backoff = backoff
        self._down_until = 0.0

    @property
    def usable(self) -> bool:
        """There, and not backing off after a failure."""
        return self.client is not None and time.monotonic() >= self._down_until

    @property
    def ready(self) -> Redis | None:
        """The client when it is usable, else None."""
        return self.client if self.usable else None

    async def call(self, command: Awaitable[Any]) -> Any:
        """`command`'s result, or FAILED."""
        try:
            # The socket timeouts bound each read and connect; this bounds the whole call
            # (a server that accepts and then never answers, retries inside the client).
            async with asyncio.timeout(self._timeout * 2):
                result = await command
        except (RedisError, OSError, TimeoutError) as exc:
            if time.monotonic() >= self._down_until:
                self._log.warning(
                    "%s unavailable, going without for %.0fs: %r", self._what, self._backoff, exc
                )
            self._down_until = time.monotonic() + self._backoff
            return FAILED
        if self._down_until:
            self._down_until = 0.0
            self._log.info("%s available again", self._what)
        return result

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()
