"""Live tail, the writer's half: number each commit per tenant, remember its rows, publish.

How the numbers, the recorded rows and the published messages fit together, and how
gateways use them, is told in shared/tail.py, which holds the message they share.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from psycopg import AsyncConnection, postgres
from psycopg.adapt import Dumper
from psycopg.pq import Format
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.model import StoredMessage, StoredRow
from shared.redis_keys import RedisKeys
from shared.tail import encode_tail_message

log = logging.getLogger("tail")

_PUBLISH_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class TailBatch:
    """What one commit stored for one tenant: its number and its rows, in tail order."""

    tenant_id: uuid.UUID
    seq: int
    records: list[StoredRow]


@dataclass(frozen=True, slots=True)
class UuidArray:
    """A uuid[] parameter made of 16-byte ids, sent in PostgreSQL's binary array format by
    one call (psycopg would dump a list element by element in Python). Needs
    UuidArrayDumper registered on the connection (services/writer/store.py does it)."""

    ids: Sequence[bytes]


class UuidArrayDumper(Dumper):
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

    def __init__(self, redis: Redis, keys: RedisKeys) -> None:
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
