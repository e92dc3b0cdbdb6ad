"""Rollup compaction (shared/compaction.py, sql/0007_rollup_compaction.sql): the hourly and
daily tables hold exactly log_counts' minutes before the watermark, however the writer's
transactions and compaction steps interleave, and queries read them only where complete."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from services.janitor.__main__ import compact_once
from services.writer.loop import Writer
from shared import rollups
from shared.compaction import SETTLE, compact_step, read_watermark
from shared.settings import Settings
from tests.conftest import in_process_writer, tenant_headers
from tests.test_stats import iso, rollups_disagree, set_watermark


@pytest.fixture
async def small_batch_writer(settings: Settings) -> AsyncIterator[Writer]:
    """A writer whose transactions hold about 100 rows: many of them to interleave with."""
    async with in_process_writer(replace(settings, writer_batch_rows=100)) as writer:
        yield writer


async def test_compaction_racing_the_writer_counts_every_minute_once(
    client, small_batch_writer, db, settings
) -> None:
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
    set_watermark(settings.postgres_conninfo(), base)
    rng = random.Random(7)
    sent = 0
    for _ in range(40):
        # Each request spans the whole hour: every batch has cells on both sides of a
        # watermark that moves through the hour while it is stored.
        entries = [
            {
                "service_name": rng.choice(["api", "auth", "billing"]),
                "level": rng.choice(["INFO", "WARN", "ERROR"]),
                "message": "m",
                "timestamp": iso(base + timedelta(seconds=rng.uniform(0, 3600))),
            }
            for _ in range(50)
        ]
        response = await client.post(
            "/api/v1/logs/batch", json={"entries": entries}, headers=tenant_headers()
        )
        assert response.status_code == 202
        sent += len(entries)

    def compact_through_the_hour() -> None:
        with psycopg.connect(settings.postgres_conninfo()) as conn:
            for minute in range(1, 62):
                compact_step(conn, now=base + timedelta(minutes=minute) + SETTLE)

    await asyncio.gather(small_batch_writer.drain(), asyncio.to_thread(compact_through_the_hour))
    assert small_batch_writer.stats.batches >= 10
    assert rollups_disagree(db) == []
    assert db.execute("SELECT sum(count) FROM log_counts_hourly").fetchone() == (sent,)
    assert db.execute("SELECT sum(count) FROM log_counts_daily").fetchone() == (sent,)


def test_the_janitor_compacts_up_to_the_last_settled_minute(settings: Settings, db) -> None:
    set_watermark(settings.postgres_conninfo(), datetime.now(UTC) - timedelta(hours=8))
    before = datetime.now(UTC)
    # Eight hours behind: caught up in steps of at most MAX_STEP, in one call.
    assert compact_once(settings) == 2
    after = db.execute("SELECT compacted_until FROM rollup_watermark").fetchone()[0]
    assert after.second == 0 and after.microsecond == 0
    assert before - SETTLE - timedelta(minutes=1) <= after <= datetime.now(UTC) - SETTLE
    assert compact_once(settings) in (0, 1)  # a minute may have settled meanwhile
    with psycopg.connect(settings.postgres_conninfo()) as conn:
        assert read_watermark(conn) >= after


@pytest.mark.parametrize("compacted_until", ["2024-01-17T05:42:00Z", "2024-01-15T10:31:00Z"])
def test_hours_and_days_are_read_only_before_the_watermarks_hour(compacted_until: str) -> None:
    lo = datetime.fromisoformat("2024-01-15T10:30:15.5Z")
    hi = datetime.fromisoformat("2024-01-22T08:07:00Z")
    watermark = datetime.fromisoformat(compacted_until)
    spans = rollups.plan_spans(lo, hi, rollups=True, compacted_until=watermark)
    assert spans[0].start == lo and spans[-1].end == hi
    assert all(a.end == b.start for a, b in itertools.pairwise(spans))
    split = rollups.floor_to(watermark, rollups.HOUR)
    for span in spans:
        if span.source.step > rollups.MINUTE:
            assert span.end <= split
    # Before the split, whole days are still read from the daily table.
    if split - lo > timedelta(days=1):
        assert any(s.source is rollups.Source.DAY for s in spans)
