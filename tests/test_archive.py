"""The Parquet archive of a tenant-day and its restore: the files hold exactly the rows
removed (every field), a crash at any step leaves the rows or a complete archive plus the
rows, and a restore brings the rows back through the streams and writers, once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import psycopg
import pyarrow.parquet as pq
import pytest

from services.janitor import archive as archive_module
from services.janitor import archive_source
from services.janitor.archive import archive_tenant_day
from services.janitor.archive_format import (
    COLUMN_NAMES,
    FORMAT_VERSION,
    ArchiveError,
    ArchiveFiles,
    file_digest,
    read_manifest,
    verified_manifest,
)
from services.janitor.restore import restore_tenant_day
from services.writer.loop import Writer
from shared.errors import ValidationFailed
from shared.model import ENTRY_FIELDS, IngestMessage, Level, LogRecord
from shared.redis_conn import make_redis
from shared.retention import check_archive_path
from shared.settings import Settings
from shared.streams import Enqueuer, encode_message
from tests.conftest import OTHER_TENANT, TENANT
from tests.processes import REPO, service_env

DAY = date(2025, 3, 10)
ARCHIVE_PATH = "acme/archive"
# Text PostgreSQL's CSV and a careless parser could get wrong.
TRICKY_TEXT = [
    "",
    "NULL",
    "null",
    "N/A",
    "NaN",
    'a "quoted", comma',
    "line\nbreak\r\nand more",
    "tab\there",
    "back\\slash \\N",
    "  spaced  ",
    "ünïcødé ✓ 日本語 🚀",
]
# Encoded as the gateway encodes metadata (msgspec, compact).
METADATA = [
    None,
    *(
        msgspec.json.encode(value)
        for value in (
            None,
            {},
            {"region": "eu-west-1", "attempt": 3},
            {"nested": {"list": [1, "two", None, 2.5e10]}, "text": 'x\ny "q" \u00e9'},
            {"empty": "", "unicode": "日本", "big": 2**62, "small": -0.000123},
        )
    ),
]

# The stored fields as selected for comparison (metadata as jsonb's text), in
# COLUMN_NAMES order.
_SELECT = ", ".join("metadata::text" if n == "metadata" else f'"{n}"' for n in COLUMN_NAMES)
_DAY_ROWS = (
    f'SELECT {_SELECT} FROM log_entries WHERE tenant_id = %s AND "timestamp" >= %s '
    'AND "timestamp" < %s ORDER BY "timestamp", id'
)


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def make_records(day: date, count: int, seed: int = 7) -> list[LogRecord]:
    """Rows over the whole UTC day, its first and last microsecond included, ties in
    time (ordered by id), every optional field null somewhere and tricky elsewhere."""
    rng = random.Random(seed)
    start = day_start(day)
    stamps = [start, start + timedelta(days=1, microseconds=-1)]
    stamps += [start + timedelta(microseconds=rng.randrange(86_400 * 10**6)) for _ in range(count)]
    if count >= 5:
        stamps[2:4] = [stamps[4], stamps[4]]
    records = []
    for i, ts in enumerate(stamps[:count]):

        def text(i: int = i) -> str | None:
            return None if rng.random() < 0.2 else rng.choice(TRICKY_TEXT) + str(i % 3)

        records.append(
            LogRecord(
                id=uuid.UUID(int=rng.getrandbits(128), version=4),
                timestamp=ts,
                level=rng.choice(list(Level)).value,
                service_name=rng.choice(["api", "billing", "ünï"]),
                message=rng.choice(TRICKY_TEXT) + f" #{i}",
                trace_id=text(),
                span_id=text(),
                user_id=text(),
                request_id=text(),
                metadata=rng.choice(METADATA),
                source=text(),
                host=text(),
                environment=text(),
            )
        )
    return records


async def store(
    settings: Settings, writer: Writer, tenant: uuid.UUID, records: list[LogRecord]
) -> None:
    """Through the streams and the writer, as the gateway's accepted requests go."""
    redis = make_redis(settings)
    try:
        enqueuer = Enqueuer(redis, settings)
        for i in range(0, len(records), 40):
            message = IngestMessage(tenant, datetime.now(UTC), records[i : i + 40])
            await enqueuer.enqueue(encode_message(message))
    finally:
        await redis.aclose()
    await writer.drain()


def pg_rows(db: psycopg.Connection, tenant: uuid.UUID, day: date) -> list[tuple[Any, ...]]:
    start = day_start(day)
    return db.execute(_DAY_ROWS, (tenant, start, start + timedelta(days=1))).fetchall()


def archive_rows(path: Path) -> list[tuple[Any, ...]]:
    """The archive read with pyarrow, as the tuples pg_rows gives (level as its number)."""
    rows = []
    for row in pq.read_table(path).to_pylist():
        row["level"] = Level[row["level"]].value
        rows.append(tuple(row[n] for n in COLUMN_NAMES))
    return rows


def duckdb_rows(path: Path) -> list[tuple[Any, ...]]:
    """The same read with DuckDB, the way the README shows."""
    select = ", ".join("metadata::VARCHAR" if n == "metadata" else f'"{n}"' for n in COLUMN_NAMES)
    with duckdb.connect() as con:
        found = con.execute(f"SELECT {select} FROM read_parquet(?)", [str(path)]).fetchall()
    levels = COLUMN_NAMES.index("level")
    rows = [(*r[:levels], Level[r[levels]].value, *r[levels + 1 :]) for r in found]
    return sorted(rows, key=lambda r: (r[1], r[0].bytes))


def delete_day(
    db: psycopg.Connection, tenant: uuid.UUID, day: date, limit: int | None = None
) -> int:
    """What the retention engine does after the archive returned (all, or a batch)."""
    start = day_start(day)
    where = 'tenant_id = %s AND "timestamp" >= %s AND "timestamp" < %s'
    params = (tenant, start, start + timedelta(days=1))
    if limit is None:
        cur = db.execute(f"DELETE FROM log_entries WHERE {where}", params)
    else:
        cur = db.execute(
            f"DELETE FROM log_entries WHERE id IN (SELECT id FROM log_entries WHERE {where} "
            f'ORDER BY "timestamp", id LIMIT {limit})',
            params,
        )
    return cur.rowcount


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "archive-root"


async def test_archive_holds_exactly_the_tenants_rows_of_the_day_with_every_field(
    settings, db, writer, root, monkeypatch
) -> None:
    # Small row groups and CSV blocks: the many-batch paths of a busy day, on few rows.
    monkeypatch.setattr(archive_module, "ROW_GROUP_ROWS", 50)
    monkeypatch.setattr(archive_source, "_BLOCK_BYTES", 4096)
    await store(settings, writer, TENANT, make_records(DAY, 230))
    # Not archived: another tenant's rows of the day, the tenant's rows of the days around.
    await store(settings, writer, OTHER_TENANT, make_records(DAY, 20, seed=8))
    await store(settings, writer, TENANT, make_records(DAY - timedelta(days=1), 10, seed=9))
    await store(settings, writer, TENANT, make_records(DAY + timedelta(days=1), 10, seed=10))
    before = pg_rows(db, TENANT, DAY)
    assert len(before) == 230

    result = archive_tenant_day(db, root, ARCHIVE_PATH, TENANT, DAY)

    assert result.path == root / ARCHIVE_PATH / str(TENANT) / f"{DAY}.parquet"
    assert (result.rows, result.reused) == (230, False)
    assert archive_rows(result.path) == before  # every field, in (timestamp, id) order
    assert duckdb_rows(result.path) == before
    parquet = pq.ParquetFile(result.path)
    assert parquet.schema_arrow.names == [*ENTRY_FIELDS, "tenant_id"]
    assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"
    assert [parquet.metadata.row_group(i).num_rows for i in range(5)] == [50, 50, 50, 50, 30]
    parquet.close()
    manifest = read_manifest(ArchiveFiles.of(root, ARCHIVE_PATH, TENANT, DAY))
    assert manifest is not None
    assert (manifest.rows, manifest.format_version, manifest.day) == (230, FORMAT_VERSION, DAY)
    assert (manifest.sha256, manifest.bytes) == file_digest(result.path)
    assert manifest.min_timestamp == day_start(DAY)
    assert manifest.max_timestamp == day_start(DAY) + timedelta(days=1, microseconds=-1)
    assert [c.name for c in manifest.columns] == [*ENTRY_FIELDS, "tenant_id"]
    assert leftovers(result.path.parent) == []


async def test_a_second_archive_of_the_day_is_the_first_and_never_loses_deleted_rows(
    settings, db, writer, root
) -> None:
    records = make_records(DAY, 120)
    await store(settings, writer, TENANT, records)
    before = pg_rows(db, TENANT, DAY)
    first = archive_tenant_day(db, root, ARCHIVE_PATH, TENANT, DAY)

    again = archive_tenant_day(db, root, ARCHIVE_PATH, TENANT, DAY)
    assert again.reused and again.sha256 == first.sha256

    # The engine's delete cut short: the archive is kept as it is, not rewritten smaller.
    assert delete_day(db, TENANT, DAY, limit=70) == 70
    after_partial = archive_tenant_day(db, root, ARCHIVE_PATH, TENANT, DAY)
    assert after_partial.reused and after_partial.sha256 == first.sha256

    # A row arrives for the day: the new archive holds it and every row deleted before.
    late = make_records(DAY, 1, seed=99)
    await store(settings, writer, TENANT, late)
    merged = archive_tenant_day(db, root, ARCHIVE_PATH, TENANT, DAY)
    assert not merged.reused and merged.rows == 121
    expected = sorted(
        {r[0]: r for r in before + pg_rows(db, TENANT, DAY)}.values(),
        key=lambda r: (r[1], r[0].bytes),
    )
    assert archive_rows(merged.path) == expected
    assert verified_manifest(ArchiveFiles.of(root, ARCHIVE_PATH, TENANT, DAY), TENANT, DAY)


async def test_an_empty_day_archives_to_an_empty_file(db, root) -> None:
    result = archive_tenant_day(db, root, ARCHIVE_PATH, TENANT, DAY)
    assert (result.rows, result.min_timestamp, result.max_timestamp) == (0, None, None)
    assert archive_rows(result.path) == []


@pytest.mark.parametrize(
    "path", ["../escape", "/absolute", "a/../../b", "a/./b", "a//b", "", ".", "a/..", "..", "a\\b"]
)
def test_archive_path_traversal_is_refused(db, root, path) -> None:
    with pytest.raises(ValidationFailed):
        check_archive_path(path, True)
    with pytest.raises(ValidationFailed):
        archive_tenant_day(db, root, path, TENANT, DAY)
    assert not root.exists()  # nothing made, inside or outside the root


def test_archive_path_needs_a_name_when_archiving() -> None:
    with pytest.raises(ValidationFailed):
        check_archive_path(None, True)
    assert check_archive_path(None, False) is None
    assert check_archive_path("tenant-a/2025_logs.v1", True) == "tenant-a/2025_logs.v1"


# -- crash safety ---------------------------------------------------------------------


def archive_in_child(
    settings: Settings, root: Path, failpoint: str = ""
) -> subprocess.CompletedProcess[bytes]:
    env = (
        service_env(settings, MINISOURCE_FAILPOINT=failpoint)
        if failpoint
        else service_env(settings)
    )
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.archive_child",
            str(root),
            ARCHIVE_PATH,
            str(TENANT),
            str(DAY),
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("point", "parquet_after_crash", "manifest_after_crash"),
    [
        ("archive_before_rename", False, False),
        ("archive_before_manifest", True, False),
        ("archive_after_manifest", True, True),
    ],
)
async def test_archive_killed_at_each_step_leaves_rows_and_a_rerun_completes_it(
    settings, db, writer, root, point, parquet_after_crash, manifest_after_crash
) -> None:
    await store(settings, writer, TENANT, make_records(DAY, 150))
    before = pg_rows(db, TENANT, DAY)
    files = ArchiveFiles.of(root, ARCHIVE_PATH, TENANT, DAY)

    crashed = archive_in_child(settings, root, point)

    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()[-2000:]
    assert pg_rows(db, TENANT, DAY) == before  # the rows are all there
    assert files.parquet.exists() is parquet_after_crash
    assert files.manifest.exists() is manifest_after_crash
    if parquet_after_crash:  # a file that exists under its name is always complete
        assert archive_rows(files.parquet) == before

    rerun = archive_in_child(settings, root)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    outcome = json.loads(rerun.stdout)
    assert outcome["rows"] == 150
    assert outcome["reused"] is manifest_after_crash
    assert verified_manifest(files, TENANT, DAY) is not None
    assert leftovers(files.directory) == []
    # The engine deletes now: every row is in the archive, once.
    delete_day(db, TENANT, DAY)
    assert archive_rows(files.parquet) == before


async def test_archive_killed_while_merging_late_rows_keeps_every_row(
    settings, db, writer, root
) -> None:
    await store(settings, writer, TENANT, make_records(DAY, 100))
    before = pg_rows(db, TENANT, DAY)
    archive_tenant_day(db, root, ARCHIVE_PATH, TENANT, DAY)
    delete_day(db, TENANT, DAY, limit=60)
    await store(settings, writer, TENANT, make_records(DAY, 5, seed=42))
    expected = sorted(
        {r[0]: r for r in before + pg_rows(db, TENANT, DAY)}.values(),
        key=lambda r: (r[1], r[0].bytes),
    )
    files = ArchiveFiles.of(root, ARCHIVE_PATH, TENANT, DAY)

    # The merged file is in place, the old manifest beside it no longer matches.
    crashed = archive_in_child(settings, root, "archive_before_manifest")
    assert crashed.returncode == -signal.SIGKILL
    assert verified_manifest(files, TENANT, DAY) is None

    rerun = archive_in_child(settings, root)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    assert json.loads(rerun.stdout)["rows"] == 105
    assert archive_rows(files.parquet) == expected
    assert verified_manifest(files, TENANT, DAY) is not None


# -- restore --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def writer_running(writer: Writer) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


def rollups(db: psycopg.Connection, tenant: uuid.UUID, day: date) -> tuple[Any, ...]:
    start = day_start(day)
    row = db.execute(
        "SELECT coalesce(sum(count), 0), coalesce(sum(bytes), 0) FROM log_counts "
        "WHERE tenant_id = %s AND minute >= %s AND minute < %s",
        (tenant, start, start + timedelta(days=1)),
    ).fetchone()
    assert row is not None
    return tuple(row)


def remove_day(db: psycopg.Connection, tenant: uuid.UUID, day: date) -> None:
    """Rows, their rollup cells and the (then empty) partition: what retention removes."""
    start = day_start(day)
    delete_day(db, tenant, day)
    for table in ("log_counts", "log_counts_by_level"):
        db.execute(
            f"DELETE FROM {table} WHERE tenant_id = %s AND minute >= %s AND minute < %s",
            (tenant, start, start + timedelta(days=1)),
        )
    partition = f"log_entries_p{day:%Y%m%d}"
    db.execute(f"ALTER TABLE log_entries DETACH PARTITION {partition}")
    db.execute(f"DROP TABLE {partition}")


async def test_restore_brings_back_the_same_rows_once_even_if_run_twice(
    settings, db, writer, root
) -> None:
    await store(settings, writer, TENANT, make_records(DAY, 300))
    await store(settings, writer, OTHER_TENANT, make_records(DAY + timedelta(days=1), 10))
    before, counted = pg_rows(db, TENANT, DAY), rollups(db, TENANT, DAY)
    archive_tenant_day(db, root, ARCHIVE_PATH, TENANT, DAY)
    remove_day(db, TENANT, DAY)
    assert pg_rows(db, TENANT, DAY) == []
    said: list[str] = []

    async with writer_running(writer):
        first = await restore_tenant_day(
            settings,
            root,
            ARCHIVE_PATH,
            TENANT,
            DAY,
            wait_seconds=60,
            batch_rows=64,
            progress=said.append,
        )
        second = await restore_tenant_day(
            settings, root, ARCHIVE_PATH, TENANT, DAY, wait_seconds=60, batch_rows=64
        )

    assert (first.archived, first.present, first.enqueued, first.stored) == (300, 0, 300, True)
    assert (second.present, second.enqueued, second.replayed, second.stored) == (300, 0, 0, True)
    assert pg_rows(db, TENANT, DAY) == before  # same ids, timestamps, every field; once
    assert rollups(db, TENANT, DAY) == counted  # stats see the day again
    assert any("stored 300 of 300 rows" in line for line in said)


async def test_restore_run_twice_before_the_writers_store_queues_the_rows_once(
    settings, db, writer, root
) -> None:
    records = make_records(DAY, 200)
    await store(settings, writer, TENANT, records)
    before = pg_rows(db, TENANT, DAY)
    archive_tenant_day(db, root, ARCHIVE_PATH, TENANT, DAY)
    # Half the day is still there (a delete cut short): only the other half comes back.
    delete_day(db, TENANT, DAY, limit=100)

    first = await restore_tenant_day(settings, root, ARCHIVE_PATH, TENANT, DAY, wait_seconds=0)
    second = await restore_tenant_day(settings, root, ARCHIVE_PATH, TENANT, DAY, wait_seconds=0)
    assert (first.present, first.enqueued, first.replayed) == (100, 100, 0)
    assert (second.present, second.enqueued, second.replayed) == (100, 0, 100)
    await writer.drain()

    assert pg_rows(db, TENANT, DAY) == before


async def test_restore_refuses_an_archive_that_does_not_match_its_manifest(
    settings, db, writer, root
) -> None:
    await store(settings, writer, TENANT, make_records(DAY, 50))
    result = archive_tenant_day(db, root, ARCHIVE_PATH, TENANT, DAY)
    delete_day(db, TENANT, DAY)
    data = bytearray(result.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    result.path.write_bytes(bytes(data))

    with pytest.raises(ArchiveError, match="manifest missing, or not matching"):
        await restore_tenant_day(settings, root, ARCHIVE_PATH, TENANT, DAY, wait_seconds=0)
    await writer.drain()
    assert pg_rows(db, TENANT, DAY) == []


async def test_restore_command_reports_progress_and_finishes(settings, db, writer, root) -> None:
    await store(settings, writer, TENANT, make_records(DAY, 80))
    before = pg_rows(db, TENANT, DAY)
    archive_tenant_day(db, root, ARCHIVE_PATH, TENANT, DAY)
    remove_day(db, TENANT, DAY)
    db.execute(
        "INSERT INTO log_retention_policies (id, tenant_id, retention_days, archive_enabled, "
        "archive_path) VALUES (%s, %s, 30, true, %s)",
        (uuid.uuid4(), TENANT, ARCHIVE_PATH),
    )
    command = [sys.executable, "-m", "services.janitor", "restore", "--tenant", str(TENANT),
               "--day", str(DAY), "--root", str(root), "--wait-seconds", "60"]  # fmt: skip

    async with writer_running(writer):
        child = await asyncio.create_subprocess_exec(
            *command,
            env=service_env(replace(settings, log_level="warning")),
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(child.communicate(), timeout=90)

    text = output.decode()
    assert child.returncode == 0, text
    assert "80 rows archived, 0 already stored, 80 queued now" in text
    assert f"restored {TENANT} {DAY}: 80 rows stored" in text
    assert pg_rows(db, TENANT, DAY) == before
