"""LogClient: `log()` queues an encoded entry and returns; one background thread sends
batches (by count, bytes or interval), retries them and keeps the counters."""

from __future__ import annotations

import atexit
import contextvars
import threading
import time
from collections import deque
from types import TracebackType
from typing import Any, Unpack

import httpx

from minisource_log_client.buffer import Buffer
from minisource_log_client.config import ClientConfig, ClientOptions
from minisource_log_client.delivery import next_step
from minisource_log_client.diagnostics import Throttled, log
from minisource_log_client.logcall import encode_call
from minisource_log_client.stats import ClientStats
from minisource_log_client.transport import Batch, base_headers, batch_url

# True in the client's own sender (thread or task): MinisourceHandler ignores records
# logged there (httpx's request lines, the client's warnings), so they never loop back.
in_sender: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "minisource_in_sender", default=False
)


class LogClient:
    """A thread-safe client for `POST /api/v1/logs/batch`.

        client = LogClient("http://localhost:5002", api_key="mlk_...", service_name="api")
        client.log(level="INFO", message="user signed in", user_id="u-1", plan="pro")
        client.close()  # or let the exit flush do it

    Keywords of `log()` that are fields of the entry (trace_id, span_id, user_id,
    request_id, source, host, environment, timestamp, metadata, id, tenant_id) go at the
    top of the entry; any other keyword goes into its metadata.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        self.config = ClientConfig(**options)
        config = self.config
        self._url = batch_url(url)
        self._http = httpx.Client(
            headers=base_headers(api_key, config.tenant_id, config.headers),
            timeout=config.timeout,
            transport=transport,
        )
        self._buffer = Buffer(config.max_queue_records, config.max_queue_bytes, config.overflow)
        self._cond = threading.Condition()
        # The sender's pause between retries waits on its own condition, woken by close()
        # only: the queue's condition is notified by log() calls, thousands a second.
        self._pause_cond = threading.Condition(threading.Lock())
        self._warn = Throttled()
        self._flush_wanted = False
        self._closing = False
        self._close_deadline = float("inf")
        self._oldest_at: float | None = None
        self._sender = threading.Thread(
            target=contextvars.Context().run,
            args=(self._run,),
            name="minisource-log-sender",
            daemon=True,  # never holds the interpreter open; the exit flush sends the rest
        )
        # Started by the first log(): a client that sends nothing has no thread, and the
        # exit flush of AsyncLogClient (send_now) needs none.
        self._started = False
        if config.flush_at_exit:
            atexit.register(self.close)

    def log(
        self,
        service_name: str | None = None,
        level: str | int = "INFO",
        message: str = "",
        **fields: Any,
    ) -> bool:
        """Queue one entry; False when the overflow policy dropped it (counted)."""
        return self.log_encoded(encode_call(self.config, service_name, level, message, fields))

    def log_encoded(self, entry: bytes) -> bool:
        """Queue an entry already encoded as JSON (what MinisourceHandler uses)."""
        with self._cond:
            if self._closing:
                self._buffer.counts["dropped_on_close"] += 1
                return False
            if not self._started:
                self._sender.start()
                self._started = True
            if self._buffer.overflow == "block" and not self._buffer.too_large(len(entry)):
                self._wait_for_room(len(entry))
            if not self._buffer.put(entry):
                self._warn.warning(
                    "queue-full",
                    "minisource: queue full (%d records, %d bytes): dropping (%s)",
                    len(self._buffer),
                    self._buffer.max_bytes,
                    self._buffer.overflow,
                )
                return False
            if self._oldest_at is None:
                # The sender sleeps without a deadline on an empty queue: give it one.
                self._oldest_at = time.monotonic()
                self._cond.notify_all()
            elif (
                len(self._buffer) >= self.config.max_batch_records
                or self._buffer.size_bytes >= self.config.max_batch_bytes
            ):
                self._cond.notify_all()
            return True

    def _wait_for_room(self, size: int) -> None:
        """Block the caller (lock held by `with self._cond`) until the entry fits."""
        timeout = self.config.block_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._buffer.fits(size) and not self._closing:
            if threading.current_thread() is self._sender:
                return  # the sender itself must never wait for itself
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            self._cond.notify_all()
            self._cond.wait(remaining)

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued so far; True when all of it reached an end (sent,
        rejected or dropped, see `stats()`) within `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._buffer.counts["queued"]
            self._flush_wanted = True
            self._cond.notify_all()
            while self._buffer.settled < target:
                if not self._sender.is_alive():
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def close(self, timeout: float | None = None) -> None:
        """Flush, then stop the sender. After `timeout` (default `close_timeout`), what
        is still queued or being retried is dropped and counted as dropped_on_close."""
        timeout = self.config.close_timeout if timeout is None else timeout
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._close_deadline = time.monotonic() + timeout
            self._cond.notify_all()
        with self._pause_cond:
            self._pause_cond.notify_all()
        if self._started and threading.current_thread() is not self._sender:
            self._sender.join(timeout + self.config.timeout + 1)
        self._http.close()
        atexit.unregister(self.close)

    def stats(self) -> ClientStats:
        with self._cond:
            return self._buffer.snapshot()

    def __enter__(self) -> LogClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # The sender thread.

    def _run(self) -> None:
        in_sender.set(True)
        while True:
            with self._cond:
                entries = self._next_batch()
                if entries is None:
                    return
            try:
                self._deliver(entries)
            except Exception:  # a bug here must not kill the sender and strand the queue
                log.exception("minisource: unexpected error sending a batch")
                with self._cond:
                    self._buffer.settle(len(entries), dropped_retries_exhausted=len(entries))
                    self._cond.notify_all()

    def _next_batch(self) -> list[bytes] | None:
        """Wait (lock held) for a full batch, the interval, a flush or close; None: stop."""
        config = self.config
        while True:
            queued = len(self._buffer)
            if self._closing and time.monotonic() >= self._close_deadline:
                self._buffer.drain()
                self._cond.notify_all()
                return None
            if queued:
                due = (self._oldest_at or 0.0) + config.flush_interval
                if (
                    queued >= config.max_batch_records
                    or self._buffer.size_bytes >= config.max_batch_bytes
                    or self._flush_wanted
                    or self._closing
                    or time.monotonic() >= due
                ):
                    entries = self._buffer.take(config.max_batch_records, config.max_batch_bytes)
                    self._oldest_at = time.monotonic() if len(self._buffer) else None
                    self._cond.notify_all()  # room for blocked callers
                    return entries
                self._cond.wait(due - time.monotonic())
                continue
            self._flush_wanted = False
            if self._closing:
                return None
            self._cond.wait()

    def _deliver(self, entries: list[bytes]) -> None:
        self._deliver_batches(deque([Batch(entries)]))

    def _deliver_batches(self, pending: deque[Batch]) -> None:
        while pending:
            batch = pending.popleft()
            while True:
                status, retry_after, body = self._post(batch)
                step = next_step(self.config.retry, batch, status, retry_after, body, self._warn)
                if step.split:
                    pending.extendleft(reversed(step.split))
                    break
                if step.retry_in is None:
                    self._settle(len(batch.entries), step.outcomes)
                    break
                if not self._pause(step.retry_in):
                    left = len(batch.entries) + sum(len(b.entries) for b in pending)
                    self._settle(left, {"dropped_on_close": left})
                    return
                with self._cond:
                    self._buffer.counts["retries"] += 1

    def send_now(self, batches: list[Batch], timeout: float) -> None:
        """Send batches made elsewhere (keeping their Idempotency-Keys) in this thread,
        for at most `timeout` seconds: AsyncLogClient's exit flush, once its loop is gone."""
        with self._cond:
            self._close_deadline = time.monotonic() + timeout
            self._buffer.adopt(sum(len(batch.entries) for batch in batches))
        self._deliver_batches(deque(batches))

    def _post(self, batch: Batch) -> tuple[int | None, str | None, bytes]:
        body, headers = batch.request(self.config.gzip)
        try:
            response = self._http.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            self._warn.warning("no-answer", "minisource: no answer from %s: %s", self._url, exc)
            return None, None, b""
        return response.status_code, response.headers.get("retry-after"), response.content

    def _pause(self, seconds: float) -> bool:
        """Wait before a retry; False when close() ran out of time meanwhile."""
        until = time.monotonic() + seconds
        with self._pause_cond:
            # close() may move the deadline closer while we wait: read it every time.
            while (now := time.monotonic()) < min(until, self._close_deadline):
                self._pause_cond.wait(min(until, self._close_deadline) - now)
        return time.monotonic() < self._close_deadline

    def _settle(self, records: int, outcomes: dict[str, int]) -> None:
        with self._cond:
            self._buffer.settle(records, **outcomes)
            self._cond.notify_all()
