"""Live tail: the message a writer publishes after each commit and gateways read.

Every writer transaction that stores rows of a tenant takes that tenant's next number
(`tail_seq`, a row locked until COMMIT, so for one tenant the numbers are gapless and in
commit order) and records which rows it stored, in order (`tail_batches`), in the same
transaction. After COMMIT the writer publishes one message per tenant on the tenant's
channel carrying the number and the rows. Entry `i` of commit `seq` is the tail position
`seq-i`: gateways deliver from the messages and, for anything a message did not bring
(lost publish, reconnect, resume), read the same rows back from PostgreSQL in the same order.
The writer's half (numbering, recording, publishing) is services/writer/tail.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import msgspec
import psycopg

from shared.db import delete_older_than
from shared.model import LogRecord, StoredRow

# A message larger than this is published without its rows: gateways read them from
# PostgreSQL. Keeps single pub/sub messages well under Redis's pubsub output buffer limit.
PUBLISH_MAX_BYTES = 4 * 1024 * 1024


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


def prune_tail_batches(conn: psycopg.Connection, keep_seconds: int) -> int:
    """Forget which rows commits older than `keep_seconds` held (the resume window), for
    every tenant. The numbers in tail_seq are kept. Returns rows deleted."""
    return delete_older_than(conn, "tail_batches", keep_seconds)
