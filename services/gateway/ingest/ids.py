"""Time-ordered ids (UUID version 7, RFC 9562) for log entries."""

from __future__ import annotations

import os
import struct
import threading
import time
import uuid

import msgspec

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
    gateway names a whole batch at once. The ids are built as integers, then turned into
    UUID objects by msgspec in C: `uuid.UUID(int=...)` alone cost more than the rest."""
    global _last_ms, _counter
    if count <= 0:
        return []
    ms = time.time_ns() // 1_000_000
    randoms = struct.unpack(f">{count}Q", os.urandom(8 * count))
    values: list[int] = []
    with _lock:
        if ms > _last_ms:
            _last_ms, _counter = ms, int.from_bytes(os.urandom(2)) & 0x3FF
        else:
            ms = _last_ms
        while len(values) < count:
            # As many as this millisecond's 12-bit counter still has room for.
            take = min(count - len(values), 0xFFF - _counter)
            if take <= 0:
                _last_ms = ms = ms + 1
                _counter = -1
                continue
            head = (ms << 80) | _VERSION_BITS
            first = _counter + 1
            values += [
                head | (c << 64) | (r & _RAND_MASK)
                for c, r in zip(range(first, first + take), randoms[len(values) :], strict=False)
            ]
            _counter += take
    framed = b"".join(_BIN16 + v.to_bytes(16) for v in values)
    return _uuid_list.decode(_msgpack_array_header(count) + framed)


def _msgpack_array_header(length: int) -> bytes:
    if length < 16:
        return bytes([0x90 | length])
    if length < 1 << 16:
        return b"\xdc" + length.to_bytes(2)
    return b"\xdd" + length.to_bytes(4)


_BIN16 = b"\xc4\x10"  # msgpack: 16 bytes of binary follow (a UUID, for msgspec)
_uuid_list = msgspec.msgpack.Decoder(list[uuid.UUID])
_RAND_MASK = (1 << 62) - 1
_VERSION_BITS = (0x7 << 76) | (0b10 << 62)
