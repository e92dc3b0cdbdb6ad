"""Archiving a tenant-day to Parquet before retention removes its rows.

`archive_tenant_day` writes `<root>/<archive_path>/<tenant>/<day>.parquet` (layout,
schema and manifest: archive_format.py) and returns only once the file and its manifest
are durable; the retention engine deletes the rows after that, never before. Each file is
written to a temp name in the same directory, fsynced, renamed over the final name and
the directory fsynced; the manifest follows the same way, last. So a crash anywhere
leaves either no archive (the rows untouched) or a complete Parquet file, with or
without its manifest, plus the rows; the next call finishes the job.

Calls are idempotent, and never lose rows an earlier call archived. An existing Parquet
file is always a source of rows: when it already holds every row of the tenant-day now in
PostgreSQL (all of them, or what is left after a delete was cut short) it is kept and, if
need be, its manifest written; when rows it lacks have arrived since, a new file holding
both is written in its place (a merge of the two sorted streams), so the rows already
deleted stay archived.

Chosen by measurement on the busiest tenant-day of the 10M-row benchmark (808k rows,
README "The archive"): pyarrow, zstd level 3, 128k-row groups, dictionaries only where
values repeat, delta-encoded timestamps: 50 B per row (DuckDB's writer: 48 to 53 B, in
1.0 to 1.1 s against pyarrow's 0.8 s; zstd 6 saves 7 % for twice the time).
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import msgspec
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from services.janitor import failpoint
from services.janitor.archive_format import (
    FORMAT_VERSION,
    MANIFEST_COLUMNS,
    SCHEMA,
    SORTED_BY,
    ArchiveFiles,
    Manifest,
    encode_manifest,
    file_digest,
    open_parquet,
    verified_manifest,
)
from services.janitor.archive_source import day_ids, day_rows
from services.janitor.pacing import UNPACED, Pace

log = logging.getLogger("janitor.archive")

# Rows per row group: ~60 MB of Arrow data for the benchmark's rows (the bound on what
# archiving holds in memory), ~6 MB of Parquet. 64k groups cost 4 % more bytes per row,
# 256k save 1 % (measured, README "The archive").
ROW_GROUP_ROWS = 128 * 1024
# Random or nearly unique per row: a dictionary would only be built and thrown away.
_NO_DICTIONARY = {"id", "timestamp", "span_id", "message", "metadata"}
_PARQUET_OPTIONS = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": [name for name in SCHEMA.names if name not in _NO_DICTIONARY],
    # Sorted microseconds: deltas of a few thousand, packed in a few bits each.
    "column_encoding": {"timestamp": "DELTA_BINARY_PACKED"},
    "sorting_columns": [pq.SortingColumn(SCHEMA.get_field_index(name)) for name in SORTED_BY],
    "write_statistics": True,
}


@dataclass(frozen=True, slots=True)
class ArchiveResult:
    """A complete, durable archive of a tenant-day."""

    rows: int
    bytes: int
    path: Path
    manifest_path: Path
    sha256: str
    min_timestamp: datetime | None
    max_timestamp: datetime | None
    # True when a complete archive already held every row: nothing was written.
    reused: bool = False


def archive_tenant_day(
    conn: psycopg.Connection,
    root: Path,
    archive_path: str,
    tenant_id: uuid.UUID,
    day: date,
    pace: Pace = UNPACED,
) -> ArchiveResult:
    """Archive the tenant's rows of the UTC `day`; returns once file and manifest are
    durable. Raises ValidationFailed for an archive_path that could leave `root`, and
    ArchiveError for an existing file that cannot be read (never overwritten then).
    `pace` rests after each piece of rows read (services/janitor/pacing.py)."""
    files = ArchiveFiles.of(root, archive_path, tenant_id, day)
    _make_directory(files.directory)
    # Left by a run that died before its rename: never part of an archive.
    for stale in (files.temp(files.parquet), files.temp(files.manifest)):
        stale.unlink(missing_ok=True)
    archived = _archived_ids(files.parquet)
    if archived is not None and not _lacks_any(day_ids(conn, tenant_id, day), archived):
        manifest = verified_manifest(files, tenant_id, day)
        if manifest is not None:
            return _result(files, manifest, reused=True)
        # A run died between the Parquet file's rename and its manifest: finish it.
        manifest = _manifest_of_file(files, tenant_id, day)
        _write_manifest(files, manifest)
        log.info("archive of %s %s completed (manifest written)", tenant_id, day)
        return _result(files, manifest)
    # Closed whatever happens: left suspended, the COPY would hold the connection.
    with contextlib.closing(day_rows(conn, tenant_id, day)) as fresh:
        rows: Iterator[pa.Table] = pace.over(fresh)
        if archived is not None:
            rows = _merged(_file_tables(files.parquet), _without(fresh, archived))
        written = _write_parquet(files, rows)
    manifest = _manifest(tenant_id, day, files, written)
    _write_manifest(files, manifest)
    log.info(
        "archived %s %s: %d rows, %d bytes%s",
        tenant_id,
        day,
        manifest.rows,
        manifest.bytes,
        " (merged with the earlier archive)" if archived is not None else "",
    )
    return _result(files, manifest)


@dataclass(slots=True)
class _Written:
    rows: int = 0
    sha256: str = ""
    bytes: int = 0
    first: datetime | None = None
    last: datetime | None = None


def _write_parquet(files: ArchiveFiles, tables: Iterable[pa.Table]) -> _Written:
    """Write the sorted rows to a temp file, make it durable, rename it into place."""
    temp = files.temp(files.parquet)
    written = _Written()
    with pq.ParquetWriter(temp, SCHEMA, **_PARQUET_OPTIONS) as writer:
        for group in _row_groups(tables):
            writer.write_table(group, row_group_size=ROW_GROUP_ROWS)
            timestamps = group.column("timestamp")
            if written.first is None:
                written.first = timestamps[0].as_py()
            written.last = timestamps[-1].as_py()
            written.rows += group.num_rows
    _fsync(temp)
    written.sha256, written.bytes = file_digest(temp)
    failpoint.reached("archive_before_rename")
    os.replace(temp, files.parquet)
    _fsync(files.directory)
    failpoint.reached("archive_before_manifest")
    return written


def _manifest(tenant_id: uuid.UUID, day: date, files: ArchiveFiles, w: _Written) -> Manifest:
    return Manifest(
        format_version=FORMAT_VERSION,
        tenant_id=tenant_id,
        day=day,
        file=files.parquet.name,
        rows=w.rows,
        bytes=w.bytes,
        sha256=w.sha256,
        min_timestamp=_utc(w.first),
        max_timestamp=_utc(w.last),
        sorted_by=SORTED_BY,
        columns=MANIFEST_COLUMNS,
        created_at=datetime.now(UTC),
    )


def _manifest_of_file(files: ArchiveFiles, tenant_id: uuid.UUID, day: date) -> Manifest:
    """The manifest of a Parquet file written by an earlier run, read back from it."""
    parquet = open_parquet(files.parquet)
    try:
        timestamps = parquet.read(columns=["timestamp"]).column("timestamp")
    finally:
        parquet.close()
    written = _Written(rows=len(timestamps))
    if len(timestamps):
        low, high = pc.min_max(timestamps).values()
        written.first, written.last = low.as_py(), high.as_py()
    written.sha256, written.bytes = file_digest(files.parquet)
    return _manifest(tenant_id, day, files, written)


def _write_manifest(files: ArchiveFiles, manifest: Manifest) -> None:
    temp = files.temp(files.manifest)
    with temp.open("wb") as f:
        f.write(encode_manifest(manifest))
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, files.manifest)
    _fsync(files.directory)
    failpoint.reached("archive_after_manifest")


def _result(files: ArchiveFiles, manifest: Manifest, *, reused: bool = False) -> ArchiveResult:
    return ArchiveResult(
        rows=manifest.rows,
        bytes=manifest.bytes,
        path=files.parquet,
        manifest_path=files.manifest,
        sha256=manifest.sha256,
        min_timestamp=manifest.min_timestamp,
        max_timestamp=manifest.max_timestamp,
        reused=reused,
    )


def _utc(value: datetime | None) -> datetime | None:
    # pyarrow returns zoneinfo's UTC; msgspec writes any UTC datetime with a "Z".
    return value.astimezone(UTC) if value is not None else None


def _fsync(path: Path) -> None:
    """fsync a file or a directory (a rename is durable once its directory is)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_directory(directory: Path) -> None:
    """Create the archive's directory and make each new entry durable in its parent."""
    missing = []
    path = directory
    while not path.exists():
        missing.append(path)
        path = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    for created in reversed(missing):
        _fsync(created.parent)


# Reading back and merging. Every stream below is sorted by (timestamp, id), the order of
# the SELECT (a uuid compares as its 16 bytes in PostgreSQL and in Arrow alike).


def _id_storage(table: pa.Table) -> pa.ChunkedArray:
    return pa.chunked_array([c.storage for c in table.column("id").chunks], pa.binary(16))


def _archived_ids(path: Path) -> pa.Array | None:
    """The ids in an existing archive file, or None when there is no file."""
    if not path.exists():
        return None
    parquet = open_parquet(path)
    try:
        ids = _id_storage(parquet.read(columns=["id"]))
    finally:
        parquet.close()
    return pa.concat_arrays(ids.chunks) if ids.num_chunks else pa.array([], pa.binary(16))


def _lacks_any(current: pa.Array, archived: pa.Array) -> bool:
    """True when some id of `current` is not in `archived`."""
    return bool(len(current)) and not pc.all(pc.is_in(current, value_set=archived)).as_py()


def _without(tables: Iterable[pa.Table], archived: pa.Array) -> Iterator[pa.Table]:
    """The rows whose ids the archive does not hold."""
    for table in tables:
        kept = table.filter(pc.invert(pc.is_in(_id_storage(table), value_set=archived)))
        if kept.num_rows:
            yield kept


def _file_tables(path: Path) -> Iterator[pa.Table]:
    parquet = open_parquet(path)
    try:
        for batch in parquet.iter_batches(batch_size=ROW_GROUP_ROWS):
            yield pa.Table.from_batches([batch], schema=SCHEMA)
    finally:
        parquet.close()


def _last_key(table: pa.Table) -> tuple[int, bytes]:
    return table.column("timestamp")[-1].value, _id_storage(table)[-1].as_py()


def _split_at(table: pa.Table, key: tuple[int, bytes]) -> tuple[pa.Table, pa.Table]:
    """The rows up to `key` (inclusive) and the rest; the first are a prefix (sorted)."""
    timestamps = table.column("timestamp")
    at = pa.scalar(key[0], SCHEMA.field("timestamp").type)
    up_to = pc.or_(
        pc.less(timestamps, at),
        pc.and_(
            pc.equal(timestamps, at),
            pc.less_equal(_id_storage(table), pa.scalar(key[1], pa.binary(16))),
        ),
    )
    count = pc.sum(up_to).as_py() or 0
    return table.slice(0, count), table.slice(count)


def _sorted(table: pa.Table) -> pa.Table:
    keys = pa.table({"t": table.column("timestamp"), "i": _id_storage(table)})
    return table.take(pc.sort_indices(keys, sort_keys=[("t", "ascending"), ("i", "ascending")]))


def _merged(left: Iterator[pa.Table], right: Iterator[pa.Table]) -> Iterator[pa.Table]:
    """Two sorted streams as one, holding at most one table of each at a time: cut both
    at the smaller of their last keys, merge what lies before the cut, keep the rest."""
    a, b = next(left, None), next(right, None)
    while a is not None and b is not None:
        cut = min(_last_key(a), _last_key(b))
        head_a, a = _split_at(a, cut)
        head_b, b = _split_at(b, cut)
        yield _sorted(pa.concat_tables([head_a, head_b]))
        # One of the two was cut at its own last key, so at least one is used up.
        a = a if a.num_rows else next(left, None)
        b = b if b.num_rows else next(right, None)
    rest, more = (a, left) if a is not None else (b, right)
    if rest is not None:
        yield rest
        yield from more


def _row_groups(tables: Iterable[pa.Table]) -> Iterator[pa.Table]:
    """The stream re-cut into tables of ROW_GROUP_ROWS rows (the last one smaller)."""
    pending: list[pa.Table] = []
    rows = 0
    for table in tables:
        pending.append(table)
        rows += table.num_rows
        while rows >= ROW_GROUP_ROWS:
            joined = pa.concat_tables(pending)
            yield joined.slice(0, ROW_GROUP_ROWS)
            rest = joined.slice(ROW_GROUP_ROWS)
            pending, rows = [rest], rest.num_rows
    if rows:
        yield pa.concat_tables(pending)


def encode_result(result: ArchiveResult) -> bytes:
    """The result as JSON (for logs and the crash tests' child process)."""
    return msgspec.json.encode(
        {
            "rows": result.rows,
            "bytes": result.bytes,
            "path": str(result.path),
            "sha256": result.sha256,
            "reused": result.reused,
        }
    )
