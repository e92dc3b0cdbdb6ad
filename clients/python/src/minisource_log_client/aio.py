"""AsyncLogClient: the asyncio twin of LogClient. `await log()` queues an entry; one task
on the caller's event loop sends batches with httpx.AsyncClient. Use it from that loop's
thread only (LogClient is the one for threads)."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import time
from collections import deque
from types import TracebackType
from typing import Any, Unpack

import httpx

from minisource_log_client.buffer import Buffer
from minisource_log_client.client import LogClient, in_sender
from minisource_log_client.config import ClientConfig, ClientOptions
from minisource_log_client.delivery import next_step
from minisource_log_client.diagnostics import Throttled, log
from minisource_log_client.logcall import encode_call
from minisource_log_client.stats import ClientStats
from minisource_log_client.transport import Batch, base_headers, batch_url


class AsyncLogClient:
    """async with AsyncLogClient("http://localhost:5002", api_key="mlk_...",
                      service_name="api") as client:
    await client.log(level="INFO", message="user signed in", user_id="u-1")
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        self.config = ClientConfig(**options)
        self._options = options
        self._base_url, self._api_key = url, api_key
        self._url = batch_url(url)
        self._http = httpx.AsyncClient(
            headers=base_headers(api_key, self.config.tenant_id, self.config.headers),
            timeout=self.config.timeout,
            transport=transport,
        )
        config = self.config
        self._buffer = Buffer(config.max_queue_records, config.max_queue_bytes, config.overflow)
        self._warn = Throttled()
        self._wake = asyncio.Event()  # for the sender: a full batch, a flush, close
        self._changed = asyncio.Event()  # for waiters: room in the queue, records settled
        self._task: asyncio.Task[None] | None = None
        self._in_flight: deque[Batch] = deque()
        self._flush_wanted = False
        self._closing = False
        self._close_deadline = float("inf")
        self._oldest_at: float | None = None
        if config.flush_at_exit:
            atexit.register(self._flush_at_exit)

    async def log(
        self,
        service_name: str | None = None,
        level: str | int = "INFO",
        message: str = "",
        **fields: Any,
    ) -> bool:
        """Queue one entry; under overflow="block" wait for room (up to block_timeout).
        False when it was dropped (counted)."""
        entry = encode_call(self.config, service_name, level, message, fields)
        if self._buffer.overflow == "block" and not self._buffer.too_large(len(entry)):
            await self._wait_for_room(len(entry))
        return self._put(entry)

    def log_nowait(
        self,
        service_name: str | None = None,
        level: str | int = "INFO",
        message: str = "",
        **fields: Any,
    ) -> bool:
        """Queue one entry without waiting; a full queue drops (even under "block")."""
        return self._put(encode_call(self.config, service_name, level, message, fields))

    def _put(self, entry: bytes) -> bool:
        if self._closing:
            self._buffer.counts["dropped_on_close"] += 1
            return False
        self._ensure_sender()
        if not self._buffer.put(entry):
            self._warn.warning(
                "queue-full",
                "minisource: queue full (%d records): dropping (%s)",
                len(self._buffer),
                self._buffer.overflow,
            )
            return False
        if self._oldest_at is None:
            self._oldest_at = time.monotonic()
            self._wake.set()  # the sender now has a deadline to wait for
        if len(self._buffer) >= self.config.max_batch_records:
            self._wake.set()
        return True

    async def _wait_for_room(self, size: int) -> None:
        timeout = self.config.block_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._buffer.fits(size) and not self._closing:
            if in_sender.get():
                return
            self._ensure_sender()
            self._wake.set()
            if not await self._changed_within(deadline):
                return

    async def _changed_within(self, deadline: float | None) -> bool:
        """Wait for the next settle or take; False at the deadline."""
        self._changed.clear()
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return False
        try:
            await asyncio.wait_for(self._changed.wait(), remaining)
        except TimeoutError:
            return False
        return True

    async def flush(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 (the twin of LogClient.flush)
        """Send everything queued so far; True when all of it reached an end in time."""
        deadline = None if timeout is None else time.monotonic() + timeout
        target = self._buffer.counts["queued"]
        self._flush_wanted = True
        self._wake.set()
        while self._buffer.settled < target:
            if self._task is None or self._task.done():
                return False
            if not await self._changed_within(deadline):
                return False
        return True

    async def aclose(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (drop deadline, not a cancel)
        """Flush, then stop the sender; after `timeout` (default close_timeout) what is
        left is dropped and counted as dropped_on_close."""
        if self._closing:
            return
        timeout = self.config.close_timeout if timeout is None else timeout
        self._closing = True
        self._close_deadline = time.monotonic() + timeout
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._http.aclose()
        atexit.unregister(self._flush_at_exit)

    def stats(self) -> ClientStats:
        return self._buffer.snapshot()

    async def __aenter__(self) -> AsyncLogClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # The sender task.

    def _ensure_sender(self) -> None:
        if self._task is None or self._task.done():
            context = contextvars.copy_context()
            context.run(in_sender.set, True)
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="minisource-log-sender", context=context
            )

    async def _run(self) -> None:
        while True:
            entries = await self._next_batch()
            if entries is None:
                return
            self._in_flight.append(Batch(entries))
            try:
                await self._deliver()
            except Exception:
                log.exception("minisource: unexpected error sending a batch")
                left = sum(len(b.entries) for b in self._in_flight)
                self._in_flight.clear()
                self._settle(left, {"dropped_retries_exhausted": left})

    async def _next_batch(self) -> list[bytes] | None:
        config = self.config
        while True:
            now = time.monotonic()
            if self._closing and now >= self._close_deadline:
                self._buffer.drain()
                self._changed.set()
                return None
            queued = len(self._buffer)
            timeout: float | None = None
            if queued:
                due = (self._oldest_at or now) + config.flush_interval
                if (
                    queued >= config.max_batch_records
                    or self._buffer.size_bytes >= config.max_batch_bytes
                    or self._flush_wanted
                    or self._closing
                    or now >= due
                ):
                    entries = self._buffer.take(config.max_batch_records, config.max_batch_bytes)
                    self._oldest_at = now if len(self._buffer) else None
                    self._changed.set()
                    return entries
                timeout = due - now
            else:
                self._flush_wanted = False
                if self._closing:
                    return None
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _deliver(self) -> None:
        pending = self._in_flight
        while pending:
            batch = pending[0]
            while True:
                status, retry_after, body = await self._post(batch)
                step = next_step(self.config.retry, batch, status, retry_after, body, self._warn)
                if step.split:
                    pending.popleft()
                    pending.extendleft(reversed(step.split))
                    break
                if step.retry_in is None:
                    pending.popleft()
                    self._settle(len(batch.entries), step.outcomes)
                    break
                if not await self._pause(step.retry_in):
                    left = sum(len(b.entries) for b in pending)
                    pending.clear()
                    self._settle(left, {"dropped_on_close": left})
                    return
                self._buffer.counts["retries"] += 1

    async def _post(self, batch: Batch) -> tuple[int | None, str | None, bytes]:
        body, headers = batch.request(self.config.gzip)
        try:
            response = await self._http.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            self._warn.warning("no-answer", "minisource: no answer from %s: %s", self._url, exc)
            return None, None, b""
        return response.status_code, response.headers.get("retry-after"), response.content

    async def _pause(self, seconds: float) -> bool:
        """Wait before a retry; False when aclose() ran out of time meanwhile."""
        until = time.monotonic() + seconds
        while (now := time.monotonic()) < min(until, self._close_deadline):
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), min(until, self._close_deadline) - now)
        return time.monotonic() < self._close_deadline

    def _settle(self, records: int, outcomes: dict[str, int]) -> None:
        self._buffer.settle(records, **outcomes)
        self._changed.set()

    def _flush_at_exit(self) -> None:
        """At interpreter exit the event loop is gone: send what is left (the batch in
        flight keeps its Idempotency-Key) with a short-lived LogClient, in this thread."""
        batches = list(self._in_flight)
        config = self.config
        while len(self._buffer):
            batches.append(
                Batch(self._buffer.take(config.max_batch_records, config.max_batch_bytes))
            )
        if not batches:
            return
        options: ClientOptions = {**self._options, "flush_at_exit": False}
        with LogClient(self._base_url, self._api_key, **options) as sync:
            sync.send_now(batches, config.close_timeout)
