"""The archive of one tenant-day: where its files live, the Parquet schema, the manifest.

`<ARCHIVE_ROOT>/<archive_path>/<tenant>/<YYYY-MM-DD>.parquet` holds the day's rows and
`<YYYY-MM-DD>.manifest.json` beside it says what a complete archive of them is (row
count, first and last timestamp, SHA-256 and size of the Parquet file, format version,
columns). The manifest is written last: a Parquet file without a manifest that matches
it is not (yet) an archive anyone may rely on. Shared by archiving (archive.py) and
restoring (restore.py).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from shared.model import ENTRY_FIELDS, LEVEL_NAMES
from shared.retention import check_archive_path

# Bumped when the schema or layout changes in a way a reader must know about.
FORMAT_VERSION = 1

# Level names in the order of their numbers (DEBUG=1 … FATAL=5): a level's dictionary
# index is its number minus one.
LEVELS = pa.array(LEVEL_NAMES, pa.string())

# Every stored field (shared/model.py ENTRY_FIELDS, then the tenant, the writer's COPY
# order) with its Arrow type, whether it may be null, and the type as the manifest names
# it. A field added to ENTRY_FIELDS without a line here fails at import: the archive must
# never silently drop one.
_COLUMNS: dict[str, tuple[pa.DataType, bool, str]] = {
    # Parquet UUID (16 bytes): DuckDB reads it as UUID, pyarrow as arrow.uuid.
    "id": (pa.uuid(), False, "uuid"),
    "timestamp": (pa.timestamp("us", "UTC"), False, "timestamp[us, UTC]"),
    # The name, not the stored small int: what the API shows and what a reader filters
    # on (`level = 'ERROR'`); dictionary-encoded, so it costs under a byte per row.
    "level": (pa.dictionary(pa.int8(), pa.string()), False, "string: " + "|".join(LEVEL_NAMES)),
    "service_name": (pa.string(), False, "string"),
    "message": (pa.string(), False, "string"),
    "trace_id": (pa.string(), True, "string"),
    "span_id": (pa.string(), True, "string"),
    "user_id": (pa.string(), True, "string"),
    "request_id": (pa.string(), True, "string"),
    # The jsonb value as PostgreSQL prints it, in a column of Parquet's JSON logical type
    # (DuckDB: JSON, pandas: str); null when the entry had no metadata.
    "metadata": (pa.json_(), True, "json"),
    "source": (pa.string(), True, "string"),
    "host": (pa.string(), True, "string"),
    "environment": (pa.string(), True, "string"),
    "tenant_id": (pa.uuid(), False, "uuid"),
}
COLUMN_NAMES: tuple[str, ...] = (*ENTRY_FIELDS, "tenant_id")
SCHEMA = pa.schema(
    [pa.field(name, _COLUMNS[name][0], nullable=_COLUMNS[name][1]) for name in COLUMN_NAMES]
)
if set(_COLUMNS) != set(COLUMN_NAMES):
    raise RuntimeError(f"archive columns {sorted(_COLUMNS)} differ from {COLUMN_NAMES}")


class ArchiveError(Exception):
    """An archive that cannot be trusted or used: a file that does not match its
    manifest, an unreadable file, another format version."""


class ManifestColumn(msgspec.Struct):
    name: str
    type: str
    nullable: bool


class Manifest(msgspec.Struct, kw_only=True):
    """`<day>.manifest.json`: what a complete archive of the tenant-day is."""

    format_version: int
    tenant_id: uuid.UUID
    day: date
    file: str
    rows: int
    bytes: int
    sha256: str
    # The first and last row's timestamps (rows are sorted by time); null for no rows.
    min_timestamp: datetime | None
    max_timestamp: datetime | None
    sorted_by: list[str]
    columns: list[ManifestColumn]
    created_at: datetime


MANIFEST_COLUMNS = [
    ManifestColumn(name, _COLUMNS[name][2], _COLUMNS[name][1]) for name in COLUMN_NAMES
]
SORTED_BY = ["timestamp", "id"]


@dataclass(frozen=True, slots=True)
class ArchiveFiles:
    """The paths of one tenant-day's archive."""

    directory: Path
    parquet: Path
    manifest: Path

    @classmethod
    def of(cls, root: Path, archive_path: str, tenant_id: uuid.UUID, day: date) -> ArchiveFiles:
        """Refuses an archive_path that could leave `root` (shared.retention)."""
        checked = check_archive_path(archive_path, True)
        assert checked is not None
        directory = root / checked / str(tenant_id)
        name = day.isoformat()
        return cls(directory, directory / f"{name}.parquet", directory / f"{name}.manifest.json")

    def temp(self, final: Path) -> Path:
        # Not matched by `*.parquet` or `*.json` globs: readers never see a partial file.
        return final.with_name(final.name + ".tmp")


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The UTC day as [start, end)."""
    start = datetime.combine(day, time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


def file_digest(path: Path) -> tuple[str, int]:
    """SHA-256 (hex) and size of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def encode_manifest(manifest: Manifest) -> bytes:
    return msgspec.json.format(msgspec.json.encode(manifest), indent=2) + b"\n"


def read_manifest(files: ArchiveFiles) -> Manifest | None:
    """The manifest, or None when there is none (or it is not one: a torn write cannot
    happen, it is renamed into place, but a hand-edited file can)."""
    try:
        return msgspec.json.decode(files.manifest.read_bytes(), type=Manifest)
    except FileNotFoundError:
        return None
    except msgspec.DecodeError:
        return None


def verified_manifest(files: ArchiveFiles, tenant_id: uuid.UUID, day: date) -> Manifest | None:
    """The manifest when it describes exactly the Parquet file beside it (this tenant-day,
    this format, same size, SHA-256 and row count); None otherwise."""
    manifest = read_manifest(files)
    if (
        manifest is None
        or manifest.format_version != FORMAT_VERSION
        or manifest.tenant_id != tenant_id
        or manifest.day != day
        or manifest.file != files.parquet.name
        or not files.parquet.exists()
    ):
        return None
    sha256, size = file_digest(files.parquet)
    if (sha256, size) != (manifest.sha256, manifest.bytes):
        return None
    if parquet_rows(files.parquet) != manifest.rows:
        return None
    return manifest


def open_parquet(path: Path) -> pq.ParquetFile:
    """The archive's Parquet file, refused when its schema is not this format's."""
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise ArchiveError(f"{path}: not a readable Parquet file ({exc})") from exc
    if not parquet.schema_arrow.equals(SCHEMA):
        parquet.close()
        raise ArchiveError(f"{path}: schema differs from archive format {FORMAT_VERSION}")
    return parquet


def parquet_rows(path: Path) -> int:
    parquet = open_parquet(path)
    try:
        return int(parquet.metadata.num_rows)
    finally:
        parquet.close()
