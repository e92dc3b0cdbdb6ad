"""An entry's size: one definition for the per-entry limit and the storage figures."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from services.writer.store import RollupCells
from shared.model import (
    ENTRY_FIXED_BYTES,
    TEXT_FIELDS,
    IngestMessage,
    LogRecord,
    entry_size,
)
from shared.streams import decode_message, encode_message


def test_an_entrys_size_is_its_text_in_utf8_and_its_metadata_json() -> None:
    now = datetime.now(UTC)
    record = LogRecord(
        uuid.uuid4(), now, 2, "api", "naïve café ✓", None, "span", None, None,
        b'{"k":"v"}', None, "host-1", None,
    )  # fmt: skip
    expected = len("api") + len("naïve café ✓".encode()) + len("span") + 9 + len("host-1")
    assert entry_size(record) == expected
    # The writer's row (decoded from the stream as a tuple) has the same size.
    (row,) = decode_message(encode_message(IngestMessage(uuid.uuid4(), now, [record]))).records
    assert entry_size(row) == expected


def test_an_entrys_size_counts_every_text_field() -> None:
    # entry_size names the fields by position (it runs per stored row): this follows
    # TEXT_FIELDS, the declared list, so a field added to LogRecord is not left out.
    values = {name: "é" for name in TEXT_FIELDS}
    record = LogRecord(
        id=uuid.uuid4(), timestamp=datetime.now(UTC), level=2, metadata=b"{}", **values
    )
    assert entry_size(record) == 2 * len(TEXT_FIELDS) + 2


def test_the_rollups_count_each_row_as_its_size_plus_the_fixed_columns() -> None:
    now = datetime.now(UTC)
    tenant = uuid.uuid4()
    records = [
        LogRecord(uuid.uuid4(), now, 2, "api", message, *[None] * 8)
        for message in ("plain", "ünïcödé")
    ]
    rows = decode_message(encode_message(IngestMessage(tenant, now, records))).records
    cells = RollupCells()
    cells.add(tenant, rows)
    ((*_, count, size),) = json.loads(cells.parameters()[0])
    assert (count, size) == (2, 2 * ENTRY_FIXED_BYTES + sum(entry_size(r) for r in records))
