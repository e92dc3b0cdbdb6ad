"""Records mapped to entries and handed to the batch's ingest (Ingestor.batch), so they
meet the very validation, limits, Idempotency-Key and backpressure of /api/v1/logs/batch.
"""

from __future__ import annotations

from typing import Any

import msgspec

from services.gateway.ingest.accept import Accepted, Ingestor
from services.gateway.ingest.limits import IngestLimits
from services.gateway.ndjson.mapping import FieldNames, to_entry
from services.gateway.ndjson.records import BadLine, read_records
from shared.model import LogEntryIn

_encoder = msgspec.json.Encoder()


def entries_of(
    records: list[Any | BadLine], names: FieldNames
) -> list[LogEntryIn] | list[msgspec.Raw]:
    """Typed entries when every record maps to a valid-looking entry; else every one as
    JSON, for the batch's decoder to name each bad record with its index."""
    mapped: list[Any] = []
    typed = True
    for record in records:
        if isinstance(record, dict):
            mapped.append(to_entry(record, names))
        else:  # not JSON, or JSON but no object: refused on its own
            mapped.append(record)
            typed = False
    if typed:
        try:
            return msgspec.convert(mapped, list[LogEntryIn])
        except msgspec.ValidationError:
            pass
    return [
        msgspec.Raw(item.text if isinstance(item, BadLine) else _encoder.encode(item))
        for item in mapped
    ]


async def accept_ndjson(
    ingestor: Ingestor,
    tenant: IngestLimits,
    body: bytes,
    names: FieldNames,
    idem_key: str | None,
) -> Accepted:
    """`body` is decompressed; the answer is /batch's (ids, per-record errors)."""
    records = read_records(body)
    tenant.check_batch(len(records))
    return await ingestor.batch(tenant, body, entries_of(records, names), idem_key)
