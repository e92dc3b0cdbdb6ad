"""A gateway and a writer as real processes on a database of their own, for the tests of
the ingest protocols (Loki push, NDJSON): what an agent talks to in production."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg

from shared.settings import Settings
from tests.conftest import clone_database, drop_database, drop_keys
from tests.polling import wait_until
from tests.processes import Service, free_port, service_env, wait_ready


@dataclass
class Pipeline:
    settings: Settings
    url: str
    gateway: Service
    writer: Service

    def db(self) -> psycopg.Connection:
        return psycopg.connect(self.settings.postgres_conninfo(), autocommit=True)

    def rows(self, tenant: uuid.UUID) -> list[dict[str, Any]]:
        """The tenant's stored entries, oldest first (as dicts of every column)."""
        with self.db() as db, db.cursor(row_factory=psycopg.rows.dict_row) as cur:
            cur.execute(
                "SELECT * FROM log_entries WHERE tenant_id = %s ORDER BY timestamp, id", (tenant,)
            )
            return cur.fetchall()

    def count(self, tenant: uuid.UUID) -> int:
        with self.db() as db:
            row = db.execute(
                "SELECT count(*) FROM log_entries WHERE tenant_id = %s", (tenant,)
            ).fetchone()
        assert row is not None
        return int(row[0])

    async def stored(self, tenant: uuid.UUID, expected: int) -> list[dict[str, Any]]:
        """The tenant's rows once `expected` are stored (the writer works on its own)."""
        await wait_until(
            lambda: self.count(tenant) >= expected, within=30, what=f"{expected} rows stored"
        )
        rows = self.rows(tenant)
        assert len(rows) == expected, rows
        return rows


@contextlib.contextmanager
def live_pipeline(base: Settings, logs: Path, **overrides: Any) -> Iterator[Pipeline]:
    """A gateway (trusted_header mode unless overridden) and a writer, both stopped and
    their database and keys dropped at the end."""
    suffix = uuid.uuid4().hex[:12]
    port = free_port()
    defaults: dict[str, Any] = {"auth_mode": "trusted_header", "writer_batch_wait_ms": 20}
    settings = replace(
        base,
        postgres_db=f"mlog_live_{suffix}",
        redis_key_prefix=f"test-live-{suffix}",
        server_port=port,
        metrics_port=0,
        **{**defaults, **overrides},
    )
    clone_database(base, settings.postgres_db)
    env = service_env(settings)
    try:
        with (
            Service("services.gateway", env, logs) as gateway,
            Service("services.writer", env, logs) as writer,
        ):
            url = f"http://127.0.0.1:{port}"
            wait_ready(gateway, url)
            yield Pipeline(settings, url, gateway, writer)
    finally:
        drop_database(base, settings.postgres_db)
        drop_keys(settings)
