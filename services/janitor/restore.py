"""Restoring an archived tenant-day: its rows back through the normal ingest pipeline, once.

    python -m services.janitor restore --tenant T --day YYYY-MM-DD
        [--root ARCHIVE_ROOT] [--archive-path PATH] [--wait-seconds 600]

The archive is checked first (manifest present, Parquet file matching its size, SHA-256
and row count). Rows whose ids the day already holds are skipped; the others go on the
ingest streams as IngestMessages of RESTORE_BATCH_ROWS rows, ids and timestamps as they
were, exactly as the gateway puts accepted requests there, and the writers store them
(making the day's partition if it was dropped, adding the rollups). Each batch carries
an idempotency key named after the archive's SHA-256 and the batch's place in the file:
a second run while an earlier one's messages still wait in the streams is answered with
a replay instead of queueing them again (within IDEMPOTENCY_TTL_SECONDS; after that,
the skip by id has long seen them stored). The gateway's INGEST_MAX_AGE_DAYS does not
apply: nothing passes through the gateway. The command then waits, reporting progress,
until the writers have stored every row or `--wait-seconds` pass (exit status 1).

A day older than the tenant's retention is removed again by the next retention run
(archived again first: the archive already holds its rows, so it is kept as it is);
lengthen the policy before restoring such a day.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import msgspec
import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from services.janitor.archive_format import (
    ArchiveError,
    ArchiveFiles,
    Manifest,
    day_bounds,
    open_parquet,
    verified_manifest,
)
from services.janitor.archive_source import day_ids
from shared.errors import ValidationFailed
from shared.logsetup import start_process
from shared.model import ENTRY_FIELDS, IngestMessage, Level, LogRecord
from shared.redis_conn import make_redis
from shared.redis_keys import RedisKeys
from shared.settings import Settings
from shared.streams import BacklogFull, Enqueuer, encode_message

# Rows per stream message: the size of the batches clients send (bench/ingest.py), far
# below MAX_BATCH_ENTRIES; a busy day (800k rows) is 800 messages, well within the
# streams' STREAM_MAX_BACKLOG.
RESTORE_BATCH_ROWS = 1000
_LEVEL_NUMBERS = {level.name: int(level) for level in Level}
_json_decode = msgspec.json.Decoder().decode
_json_encode = msgspec.json.Encoder().encode
_COUNT_SQL = (
    'SELECT count(*) FROM log_entries WHERE tenant_id = %s AND "timestamp" >= %s '
    'AND "timestamp" < %s'
)
_POLICY_PATH_SQL = "SELECT archive_path FROM log_retention_policies WHERE tenant_id = %s"


@dataclass(frozen=True, slots=True)
class RestoreResult:
    archived: int  # rows in the archive
    present: int  # of them, already in log_entries when the run started
    enqueued: int  # put on the streams by this run
    replayed: int  # in batches an earlier run had queued (answered by their idempotency key)
    stored: bool  # every archived row is in log_entries


async def restore_tenant_day(
    settings: Settings,
    root: Path,
    archive_path: str,
    tenant_id: uuid.UUID,
    day: date,
    *,
    wait_seconds: float = 600.0,
    batch_rows: int = RESTORE_BATCH_ROWS,
    progress: Callable[[str], None] = print,
) -> RestoreResult:
    """Put the archived rows the day lacks on the ingest streams, then wait up to
    `wait_seconds` (0: not at all) for the writers to have stored them."""
    files = ArchiveFiles.of(root, archive_path, tenant_id, day)
    manifest = verified_manifest(files, tenant_id, day)
    if manifest is None:
        raise ArchiveError(
            f"no complete archive of {tenant_id} {day} at {files.parquet} "
            "(manifest missing, or not matching the file)"
        )
    deadline = time.monotonic() + wait_seconds
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        present_ids = await asyncio.to_thread(day_ids, conn, tenant_id, day)
        redis = make_redis(settings)
        try:
            queued = await _enqueue_missing(
                Enqueuer(redis, settings),
                RedisKeys.from_settings(settings),
                files,
                manifest,
                present_ids,
                batch_rows,
                deadline,
            )
        finally:
            await redis.aclose()
        missing = queued.enqueued + queued.replayed
        progress(
            f"{manifest.rows} rows archived, {manifest.rows - missing} already stored, "
            f"{queued.enqueued} queued now, {queued.replayed} queued by an earlier run"
        )
        stored = await _wait_stored(
            conn, tenant_id, day, len(present_ids) + missing, missing, deadline, progress
        )
    return RestoreResult(manifest.rows, manifest.rows - missing, queued.enqueued,
                         queued.replayed, stored)  # fmt: skip


@dataclass(slots=True)
class _Queued:
    enqueued: int = 0
    replayed: int = 0


async def _enqueue_missing(
    enqueuer: Enqueuer,
    keys: RedisKeys,
    files: ArchiveFiles,
    manifest: Manifest,
    present_ids: pa.Array,
    batch_rows: int,
    deadline: float,
) -> _Queued:
    queued = _Queued()
    parquet = open_parquet(files.parquet)
    try:
        for index, batch in enumerate(parquet.iter_batches(batch_size=batch_rows)):
            table = pa.Table.from_batches([batch])
            ids = pa.chunked_array([c.storage for c in table.column("id").chunks], pa.binary(16))
            table = table.filter(pc.invert(pc.is_in(ids, value_set=present_ids)))
            if not table.num_rows:
                continue
            message = IngestMessage(
                tenant_id=manifest.tenant_id, received_at=datetime.now(UTC), records=_records(table)
            )
            # The batch's place in this very file: the same rows on a second run (less
            # the ones stored since, which the filter above drops).
            key = keys.idempotency(
                str(manifest.tenant_id), f"restore:{manifest.sha256}:{batch_rows}:{index}"
            )
            replayed = await _enqueue(enqueuer, encode_message(message), key, deadline)
            if replayed:
                queued.replayed += table.num_rows
            else:
                queued.enqueued += table.num_rows
    finally:
        parquet.close()
    return queued


async def _enqueue(enqueuer: Enqueuer, payload: bytes, key: str, deadline: float) -> bool:
    """XADD with the idempotency key; True when an earlier run had queued it. Waits while
    every shard is at STREAM_MAX_BACKLOG (the writers catching up), until `deadline`."""
    delay = 0.1
    while True:
        try:
            outcome = await enqueuer.enqueue(payload, idempotency_key=key, answer=b"restore")
        except BacklogFull:
            if time.monotonic() + delay > deadline:
                raise TimeoutError("the ingest streams stayed full; run restore again") from None
            await asyncio.sleep(delay)
            delay = min(2.0, delay * 2)
            continue
        return outcome.replayed_answer is not None


def _records(table: pa.Table) -> list[LogRecord]:
    """Rows of the archive as the gateway's records: ids and timestamps kept, the level
    back to its number, metadata as compact JSON text."""
    columns = [table.column(name).to_pylist() for name in ENTRY_FIELDS]
    level = ENTRY_FIELDS.index("level")
    metadata = ENTRY_FIELDS.index("metadata")
    columns[level] = [_LEVEL_NUMBERS[name] for name in columns[level]]
    columns[metadata] = [_compact_json(m) if m is not None else None for m in columns[metadata]]
    return [LogRecord(*values) for values in zip(*columns, strict=True)]


def _compact_json(text: str) -> bytes:
    """jsonb's text (`{"a": 1, "b": 2}`) as the gateway encodes metadata (msgspec,
    `{"a":1,"b":2}`): the same value, and the same length, which the rollups count as the
    entry's bytes, so storage figures after a restore are those before. Lossless for
    anything the gateway stored: its numbers went through a float or an int already."""
    return _json_encode(_json_decode(text))


async def _wait_stored(
    conn: psycopg.Connection,
    tenant_id: uuid.UUID,
    day: date,
    expected: int,
    restoring: int,
    deadline: float,
    progress: Callable[[str], None],
) -> bool:
    """Until the day holds `expected` rows (what it held plus what was queued)."""
    start, end = day_bounds(day)
    before = expected - restoring
    reported = -1
    while True:
        row = (
            await asyncio.to_thread(conn.execute, _COUNT_SQL, (tenant_id, start, end))
        ).fetchone()
        stored = (int(row[0]) if row else 0) - before
        if stored != reported and restoring:
            progress(f"stored {min(stored, restoring)} of {restoring} rows")
            reported = stored
        if stored >= restoring:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.5)


def _policy_archive_path(settings: Settings, tenant_id: uuid.UUID) -> str | None:
    with psycopg.connect(settings.postgres_conninfo()) as conn:
        row = conn.execute(_POLICY_PATH_SQL, (tenant_id,)).fetchone()
    return row[0] if row else None


def main(argv: list[str]) -> None:
    """`python -m services.janitor restore …`; exit status 1 when not every row was
    stored within --wait-seconds."""
    parser = argparse.ArgumentParser(
        prog="python -m services.janitor restore",
        description="Re-ingest an archived tenant-day through the streams and writers.",
    )
    parser.add_argument("--tenant", type=uuid.UUID, required=True)
    parser.add_argument("--day", type=date.fromisoformat, required=True, help="YYYY-MM-DD (UTC)")
    parser.add_argument("--root", type=Path, help="default: ARCHIVE_ROOT")
    parser.add_argument("--archive-path", help="default: the tenant's retention policy's")
    parser.add_argument("--wait-seconds", type=float, default=600.0)
    args = parser.parse_args(argv)
    settings = start_process("janitor-restore")
    archive_path = args.archive_path or _policy_archive_path(settings, args.tenant)
    if not archive_path:
        sys.exit("restore: the tenant's policy names no archive_path; pass --archive-path")
    try:
        result = asyncio.run(
            restore_tenant_day(
                settings,
                args.root or Path(settings.archive_root),
                archive_path,
                args.tenant,
                args.day,
                wait_seconds=args.wait_seconds,
            )
        )
    except (ArchiveError, ValidationFailed, TimeoutError) as exc:
        sys.exit(f"restore: {getattr(exc, 'detail', None) or exc}")
    if not result.stored:
        sys.exit(f"restore: not every row was stored within {args.wait_seconds:g}s; run it again")
    print(f"restored {args.tenant} {args.day}: {result.enqueued + result.replayed} rows stored")
