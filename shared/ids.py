"""Time-ordered ids (UUID version 7, RFC 9562) for log entries."""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import UTC, datetime

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def uuid7(now_ns: int | None = None) -> uuid.UUID:
    """A UUIDv7: 48-bit Unix milliseconds, then a 12-bit counter (method 1 of RFC 9562
    section 6.2) so ids made in the same millisecond by one process stay ordered, then
    62 random bits."""
    global _last_ms, _counter
    ms = (now_ns if now_ns is not None else time.time_ns()) // 1_000_000
    with _lock:
        if ms > _last_ms:
            _last_ms, _counter = ms, int.from_bytes(os.urandom(2)) & 0x3FF
        else:
            # Same (or earlier, if the clock stepped back) millisecond: keep counting.
            ms = _last_ms
            _counter += 1
            if _counter > 0xFFF:
                _last_ms = ms = ms + 1
                _counter = 0
        counter = _counter
    rand = int.from_bytes(os.urandom(8)) & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand
    return uuid.UUID(int=value)


def uuid7_batch(count: int) -> list[uuid.UUID]:
    """`count` UUIDv7s, ordered, made under one lock with one read of random bytes: the
    gateway names a whole batch at once (per-id locking and urandom cost ~4 us each)."""
    global _last_ms, _counter
    ms = time.time_ns() // 1_000_000
    randomness = os.urandom(8 * count)
    with _lock:
        if ms > _last_ms:
            _last_ms, _counter = ms, int.from_bytes(os.urandom(2)) & 0x3FF
        else:
            ms = _last_ms
        ids = []
        for i in range(count):
            _counter += 1
            if _counter > 0xFFF:
                _last_ms = ms = ms + 1
                _counter = 0
            rand = int.from_bytes(randomness[8 * i : 8 * i + 8]) & _RAND_MASK
            ids.append(uuid.UUID(int=(ms << 80) | _VERSION_BITS | (_counter << 64) | rand))
    return ids


_RAND_MASK = (1 << 62) - 1
_VERSION_BITS = (0x7 << 76) | (0b10 << 62)


def uuid7_time(value: uuid.UUID) -> datetime | None:
    """The creation time embedded in a UUIDv7, or None for other versions."""
    if value.version != 7:
        return None
    return datetime.fromtimestamp((value.int >> 80) / 1000, tz=UTC)
