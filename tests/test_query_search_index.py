"""The janitor's search index: built on closed partitions only, one per call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from services.janitor.search_index import INDEX_SUFFIX, build_search_index


def indexed(db: psycopg.Connection) -> set[str]:
    return {
        str(row[0])
        for row in db.execute(
            "SELECT tablename FROM pg_indexes WHERE indexname = tablename || %s", (INDEX_SUFFIX,)
        )
    }


def test_closed_partitions_get_the_trigram_index_one_per_call(db: psycopg.Connection) -> None:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    older = [
        db.execute("SELECT ensure_log_partition(%s)", (today - timedelta(days=d),)).fetchone()[0]
        for d in (2, 1)
    ]
    assert build_search_index(db) == older[0]  # oldest first
    assert indexed(db) == {older[0]}
    assert build_search_index(db) == older[1]
    assert build_search_index(db) is None  # today's and later partitions are still open
    assert indexed(db) == set(older)
    # A later day's boundary closes today's partition as well.
    assert (
        build_search_index(db, before=today + timedelta(days=1)) == f"log_entries_p{today:%Y%m%d}"
    )
