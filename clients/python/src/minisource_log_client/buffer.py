"""The bounded queue between `log()` and the sender: encoded entries, a bound on records
and on bytes, the overflow policy and the counters. Not thread-safe by itself: the sync
client guards it with a lock, the async one uses it from its event loop only."""

from __future__ import annotations

from collections import deque
from typing import Literal

from minisource_log_client.stats import ClientStats

Overflow = Literal["drop_new", "drop_old", "block"]
OVERFLOW_POLICIES: tuple[Overflow, ...] = ("drop_new", "drop_old", "block")


class Buffer:
    def __init__(self, max_records: int, max_bytes: int, overflow: Overflow) -> None:
        if max_records < 1 or max_bytes < 1:
            raise ValueError("the queue bounds must be positive")
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {', '.join(OVERFLOW_POLICIES)}")
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.overflow = overflow
        self._items: deque[bytes] = deque()
        self._bytes = 0
        self._high_records = 0
        self._high_bytes = 0
        self._in_flight = 0
        # Plain ints, not a dataclass per change: `put` runs once per log call.
        self.counts: dict[str, int] = dict.fromkeys(
            (
                "queued",
                "sent",
                "rejected",
                "dropped_queue_full",
                "dropped_too_large",
                "dropped_retries_exhausted",
                "dropped_on_close",
                "batches_sent",
                "retries",
            ),
            0,
        )
        self.settled = 0
        """Queued records that reached an end (sent, rejected or dropped)."""

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def fits(self, size: int) -> bool:
        return len(self._items) < self.max_records and self._bytes + size <= self.max_bytes

    def too_large(self, size: int) -> bool:
        """An entry over the whole byte bound can never be queued."""
        return size > self.max_bytes

    def put(self, item: bytes) -> bool:
        """Queue one encoded entry under the overflow policy; False when it was dropped.
        "block" is the caller's to implement (wait until `fits`); past that, it drops."""
        size = len(item)
        if size > self.max_bytes:
            self.counts["dropped_too_large"] += 1
            return False
        if not self.fits(size):
            if self.overflow != "drop_old":
                self.counts["dropped_queue_full"] += 1
                return False
            while not self.fits(size):
                self._bytes -= len(self._items.popleft())
                self.settled += 1
                self.counts["dropped_queue_full"] += 1
        self._items.append(item)
        self._bytes += size
        self.counts["queued"] += 1
        if len(self._items) > self._high_records:
            self._high_records = len(self._items)
        if self._bytes > self._high_bytes:
            self._high_bytes = self._bytes
        return True

    def take(self, max_records: int, max_bytes: int) -> list[bytes]:
        """The oldest entries, as many as fit in one batch of `max_bytes` (at least one)."""
        batch: list[bytes] = []
        size = 0
        items = self._items
        while items and len(batch) < max_records:
            if batch and size + len(items[0]) + 1 > max_bytes:
                break
            item = items.popleft()
            batch.append(item)
            size += len(item) + 1
        self._bytes -= size - len(batch)
        self._in_flight += len(batch)
        return batch

    def adopt(self, records: int) -> None:
        """Count records handed straight to the sender, as queued and in flight."""
        self.counts["queued"] += records
        self._in_flight += records

    def drain(self) -> int:
        """Empty the queue (at close, out of time), counted as dropped_on_close."""
        count = len(self._items)
        self._items.clear()
        self._bytes = 0
        self.settled += count
        self.counts["dropped_on_close"] += count
        return count

    def settle(self, records: int, **outcomes: int) -> None:
        """`records` given out by `take` reached an end; `outcomes` count which."""
        self.settled += records
        self._in_flight -= records
        for name, n in outcomes.items():
            self.counts[name] += n

    def snapshot(self) -> ClientStats:
        return ClientStats(
            **self.counts,
            queue_records=len(self._items),
            queue_bytes=self._bytes,
            queue_records_high=self._high_records,
            queue_bytes_high=self._high_bytes,
            in_flight=self._in_flight,
        )
