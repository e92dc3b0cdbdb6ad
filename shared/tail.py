"""Live tail, the writer's half: number each commit per tenant, remember its rows, publish.

Every writer transaction that stores rows of a tenant takes that tenant's next number
(`tail_seq`, a row locked until COMMIT, so for one tenant the numbers are gapless and in
commit order) and records which rows it stored, in order (`tail_batches`), in the same
transaction. After COMMIT the writer publishes one message per tenant on the tenant's
channel carrying the number and the rows. Entry `i` of commit `seq` is the tail position
`seq-i`: gateways deliver from the messages and, for anything a message did not bring
(lost publish, reconnect, resume), read the same rows back from PostgreSQL in the same order.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import msgspec
import psycopg
from psycopg import AsyncConnection, postgres
from psycopg.adapt import Dumper
from psycopg.pq import Format
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.db import delete_older_than
from shared.model import LogRecord, StoredMessage, StoredRow
from shared.streams import StreamKeys

log = logging.getLogger("tail")

# A message larger than this is published without its rows: gateways read them from
# PostgreSQL. Keeps single pub/sub messages well under Redis's pubsub output buffer limit.
PUBLISH_MAX_BYTES = 4 * 1024 * 1024
_PUBLISH_TIMEOUT_SECONDS = 2.0


class TailMessage(msgspec.Struct, array_like=True):
    """One tenant's rows of one commit, as published. `records` None: read them from
    PostgreSQL (the message would have been too large)."""

    tenant_id: uuid.UUID
    seq: int
    records: list[LogRecord] | None


_encoder = msgspec.msgpack.Encoder(uuid_format="bytes")
_decoder = msgspec.msgpack.Decoder(TailMessage)


def encode_tail_message(
    tenant_id: uuid.UUID, seq: int, records: Sequence[LogRecord] | Sequence[StoredRow]
) -> bytes:
    """A TailMessage's bytes. The writer's rows (StoredRow tuples, ids as 16 bytes) encode
    exactly as LogRecords do, so gateways decode either as TailMessage."""
    payload = _encoder.encode((tenant_id, seq, records))
    if len(payload) > PUBLISH_MAX_BYTES:
        payload = _encoder.encode((tenant_id, seq, None))
    return payload


def decode_tail_message(payload: bytes) -> TailMessage:
    return _decoder.decode(payload)


@dataclass(frozen=True, slots=True)
class TailBatch:
    """What one commit stored for one tenant: its number and its rows, in tail order."""

    tenant_id: uuid.UUID
    seq: int
    records: list[StoredRow]


@dataclass(frozen=True, slots=True)
class UuidArray:
    """A uuid[] parameter made of 16-byte ids, sent in PostgreSQL's binary array format by
    one call (psycopg would dump a list element by element in Python)."""

    ids: Sequence[bytes]


class _UuidArrayDumper(Dumper):
    format = Format.BINARY
    oid = postgres.types["uuid"].array_oid

    def dump(self, obj: UuidArray) -> bytes:
        ids = obj.ids
        # ndim, has-nulls flag, element type, then the one dimension's length and lower
        # bound; each element is its length and its bytes.
        header = _ARRAY_HEADER.pack(1, 0, postgres.types["uuid"].oid, len(ids), 1)
        return header + b"".join([_UUID_LENGTH + i for i in ids])


_ARRAY_HEADER = struct.Struct(">iiIii")
_UUID_LENGTH = (16).to_bytes(4)
psycopg.adapters.register_dumper(UuidArray, _UuidArrayDumper)


# One statement for every tenant of the transaction: the rows come as two flat arrays,
# each tenant's rows being the slice [lo:hi]. Tenants are bumped in sorted order so
# concurrent writers lock tail_seq rows in the same order (no deadlock); the lock is held
# until COMMIT, which is what makes one tenant's numbers follow commit order.
_RECORD_SQL = """
WITH t AS (
    SELECT * FROM unnest(%b::uuid[], %b::int[], %b::int[]) AS t(tenant_id, lo, hi)
), bumped AS (
    INSERT INTO tail_seq AS s (tenant_id, last_seq)
    SELECT tenant_id, 1 FROM t ORDER BY tenant_id
    ON CONFLICT (tenant_id) DO UPDATE SET last_seq = s.last_seq + 1
    RETURNING tenant_id, last_seq
)
INSERT INTO tail_batches (tenant_id, seq, rows, ids, stamps)
SELECT b.tenant_id, b.last_seq, t.hi - t.lo + 1,
       (%b::uuid[])[t.lo:t.hi], (%b::timestamptz[])[t.lo:t.hi]
FROM bumped b JOIN t USING (tenant_id)
RETURNING tenant_id, seq
"""


async def record_tail_batches(
    conn: AsyncConnection, messages: Sequence[StoredMessage]
) -> list[TailBatch]:
    """Inside the writer's transaction, after its rows: number this commit for each
    tenant in `messages` and record its rows. Returns what to publish after COMMIT."""
    by_tenant: dict[uuid.UUID, list[StoredRow]] = {}
    for message in messages:
        by_tenant.setdefault(message.tenant_id, []).extend(message.records)
    tenants: list[uuid.UUID] = []
    bounds: list[tuple[int, int]] = []
    ids: list[bytes] = []
    stamps: list[datetime] = []
    for tenant, records in by_tenant.items():
        if not records:
            continue
        tenants.append(tenant)
        bounds.append((len(ids) + 1, len(ids) + len(records)))  # SQL arrays count from 1
        ids += [r[0] for r in records]
        stamps += [r[1] for r in records]
    if not tenants:
        return []
    cur = await conn.execute(
        _RECORD_SQL,
        (tenants, [lo for lo, _ in bounds], [hi for _, hi in bounds], UuidArray(ids), stamps),
    )
    seqs = {row[0]: int(row[1]) for row in await cur.fetchall()}
    return [TailBatch(t, seqs[t], by_tenant[t]) for t in tenants]


class TailPublisher:
    """Publishes committed batches; a failure is logged and counted, never raised: the
    rows are committed, and gateways find the missing number and read them from
    PostgreSQL."""

    def __init__(self, redis: Redis, keys: StreamKeys) -> None:
        self._redis = redis
        self._keys = keys
        self.failures = 0
        self._failing = False

    async def publish(self, batches: Sequence[TailBatch]) -> None:
        if not batches:
            return
        try:
            async with asyncio.timeout(_PUBLISH_TIMEOUT_SECONDS):
                async with self._redis.pipeline(transaction=False) as pipe:
                    for b in batches:
                        pipe.publish(
                            self._keys.tail_channel(str(b.tenant_id)),
                            encode_tail_message(b.tenant_id, b.seq, b.records),
                        )
                    await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            self.failures += 1
            if not self._failing:
                log.warning("tail publish failed (gateways will read from PostgreSQL): %s", exc)
                self._failing = True
            return
        if self._failing:
            log.info("tail publish recovered after %d failures", self.failures)
            self._failing = False


def prune_tail_batches(conn: psycopg.Connection, keep_seconds: int) -> int:
    """Forget which rows commits older than `keep_seconds` held (the resume window), for
    every tenant. The numbers in tail_seq are kept. Returns rows deleted."""
    return delete_older_than(conn, "tail_batches", keep_seconds)
