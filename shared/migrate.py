"""Apply the numbered SQL migrations in sql/ once each, in order, under an advisory lock.

Run as `python -m shared.migrate` (what `make migrate` does); every process also calls
`migrate()` at start, so a fresh database is usable without a separate step. Two
processes starting together serialise on the lock; the second finds nothing to do.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import sys
from pathlib import Path

import psycopg

from shared.lifecycle import retry_until_ready
from shared.settings import Settings, SettingsError

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_KEY = 0x6D696E69  # "mini": one advisory lock id for all migrators


def migration_files(directory: Path = SQL_DIR) -> list[tuple[int, Path]]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise RuntimeError(f"migration file {path.name} is not named NNNN_name.sql")
        found.append((int(match.group(1)), path))
    versions = [v for v, _ in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError("two migration files share a number")
    return found


def migrate(settings: Settings, conninfo: str | None = None) -> list[int]:
    """Apply what is missing; returns the versions applied by this call."""
    applied_now: list[int] = []
    with psycopg.connect(conninfo or settings.postgres_conninfo(), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version    integer PRIMARY KEY,
                       name       text NOT NULL,
                       checksum   text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {
                row[0]: row[1]
                for row in conn.execute("SELECT version, checksum FROM schema_migrations")
            }
            for version, path in migration_files():
                text = path.read_text()
                checksum = hashlib.sha256(text.encode()).hexdigest()
                if version in done:
                    if done[version] != checksum:
                        log.warning("migration %s changed after it was applied", path.name)
                    continue
                with conn.transaction():
                    conn.execute(text.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) "
                        "VALUES (%s, %s, %s)",
                        (version, path.name, checksum),
                    )
                applied_now.append(version)
                log.info("applied migration %s", path.name)
            conn.execute(
                "INSERT INTO log_settings (key, value) VALUES ('partition_interval', %s) "
                "ON CONFLICT (key) DO NOTHING",
                (settings.partition_interval,),
            )
            ensure_partitions_ahead(conn, settings)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now


async def migrate_when_reachable(settings: Settings, stop: asyncio.Event) -> list[int] | None:
    """`migrate()` for a process starting: while PostgreSQL does not answer yet (compose
    starts everything at once), retried with capped backoff. The versions applied by this
    call, or None when `stop` was set first."""
    return await retry_until_ready(
        "PostgreSQL (to apply migrations)", lambda: asyncio.to_thread(migrate, settings), stop
    )


def ensure_partitions_ahead(conn: psycopg.Connection, settings: Settings) -> None:
    """Partitions from the current one through PARTITIONS_AHEAD intervals ahead exist
    afterwards, in the interval the database was created with (log_settings)."""
    # Calendar arithmetic in SQL: a month is not 28 days (that skipped months).
    for i in range(settings.partitions_ahead + 1):
        conn.execute(
            """SELECT ensure_log_partition(now() + CASE
                   (SELECT value FROM log_settings WHERE key = 'partition_interval')
                   WHEN 'month' THEN make_interval(months => %(i)s)
                   ELSE make_interval(days => %(i)s) END)""",
            {"i": i},
        )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        sys.exit(str(exc))
    from shared.db import bootstrap_database

    bootstrap_database(settings)
    applied = migrate(settings)
    print(f"migrations applied: {applied or 'none (up to date)'}")


if __name__ == "__main__":
    main()
