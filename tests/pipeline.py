"""What the fault tests share: sending realistic batches, and reading back what the
pipeline holds (rows, inbox, pending stream messages) to check exactly-once."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import psycopg
from redis import Redis

from shared.redis_keys import RedisKeys
from shared.settings import Settings
from shared.streams import GROUP
from tests.conftest import tenant_headers
from tests.datagen import load_gen_logs


def make_batches(requests: int, per_request: int, seed: int = 1) -> list[list[dict[str, Any]]]:
    """`requests` batches of realistic entries of the last day, for the test tenant."""
    entries = list(load_gen_logs().generate(requests * per_request, seed=seed, days=1, tenants=1))
    for entry in entries:
        del entry["tenant_id"]
    return [entries[i : i + per_request] for i in range(0, len(entries), per_request)]


async def post_batch(client: Any, entries: list[dict[str, Any]]) -> Any:
    return await client.post(
        "/api/v1/logs/batch", json={"entries": entries}, headers=tenant_headers()
    )


async def ingest(client: Any, batches: list[list[dict[str, Any]]]) -> list[uuid.UUID]:
    """Send every batch; all must be accepted. Returns the ids assigned."""
    ids: list[uuid.UUID] = []
    for entries in batches:
        response = await post_batch(client, entries)
        assert response.status_code == 202, response.text
        ids.extend(uuid.UUID(i) for i in response.json()["ids"])
    return ids


def row_count(db: psycopg.Connection) -> int:
    row = db.execute("SELECT count(*) FROM log_entries").fetchone()
    assert row is not None
    return int(row[0])


def sync_redis(settings: Settings) -> Redis:
    return Redis(host=settings.redis_host, port=settings.redis_port, db=settings.redis_db)


def pending_ids(settings: Settings) -> set[tuple[str, str]]:
    """(stream, message id) of every message read by a writer and not acknowledged."""
    found: set[tuple[str, str]] = set()
    with contextlib.closing(sync_redis(settings)) as redis:
        for stream in RedisKeys.from_settings(settings).all_shards():
            if not redis.exists(stream):
                continue
            for entry in redis.xpending_range(stream, GROUP, min="-", max="+", count=100_000):
                found.add((stream, entry["message_id"].decode()))
    return found


def stream_length(settings: Settings, shard: int) -> int:
    with contextlib.closing(sync_redis(settings)) as redis:
        return int(redis.xlen(RedisKeys.from_settings(settings).shard(shard)))


def inbox_ids(db: psycopg.Connection) -> set[tuple[str, str]]:
    return {(r[0], r[1]) for r in db.execute("SELECT stream, message_id FROM ingest_inbox")}


def assert_stored_exactly_once(db: psycopg.Connection, accepted: list[uuid.UUID]) -> None:
    """Every accepted id is stored, once; nothing else is; the rollups agree."""
    rows = [r[0] for r in db.execute("SELECT id FROM log_entries")]
    assert len(rows) == len(set(rows)), f"{len(rows) - len(set(rows))} duplicate rows"
    assert set(rows) == set(accepted)
    assert len(rows) == len(accepted)
    counted = db.execute("SELECT coalesce(sum(count), 0) FROM log_counts").fetchone()
    assert counted == (len(accepted),)
