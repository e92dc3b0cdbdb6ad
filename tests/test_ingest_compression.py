"""`Content-Encoding: gzip` / `deflate` on /api/v1/logs and /api/v1/logs/batch: the body
is decompressed within the tenant's body limit, then handled as a plain one."""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import replace

import pytest
from litestar.testing import AsyncTestClient

from services.gateway.app import create_app
from tests.conftest import tenant_headers
from tests.pipeline import row_count

BATCH = {
    "entries": [
        {"service_name": "gz", "level": "INFO", "message": f"compressed {i}"} for i in range(50)
    ]
}


def _headers(encoding: str) -> dict[str, str]:
    return {**tenant_headers(), "Content-Encoding": encoding}


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("identity", lambda body: body),
    ],
)
async def test_a_compressed_batch_is_stored_as_a_plain_one(
    client, writer, db, encoding, compress
) -> None:
    body = compress(json.dumps(BATCH).encode())
    response = await client.post("/api/v1/logs/batch", content=body, headers=_headers(encoding))
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 50
    one = {"service_name": "gz", "level": "WARN", "message": "one, gzipped"}
    response = await client.post(
        "/api/v1/logs", content=gzip.compress(json.dumps(one).encode()), headers=_headers("gzip")
    )
    assert response.status_code == 202, response.text
    await writer.drain()
    assert row_count(db) == 51


async def test_bad_compressed_bodies_are_refused_and_nothing_is_stored(client, writer, db) -> None:
    plain = json.dumps(BATCH).encode()
    cases = [
        ("gzip", plain, 400),  # not gzip at all
        ("gzip", gzip.compress(plain)[:-20], 400),  # truncated
        ("br", plain, 415),
        ("snappy", plain, 415),  # Loki's, not this API's
    ]
    for encoding, body, status in cases:
        response = await client.post("/api/v1/logs/batch", content=body, headers=_headers(encoding))
        assert response.status_code == status, (encoding, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    await writer.drain()
    assert row_count(db) == 0


async def test_a_body_larger_once_decompressed_than_the_limit_is_413(settings) -> None:
    config = replace(settings, max_body_bytes=64 * 1024)
    bomb = gzip.compress(b"[" + b" " * (10 * 1024 * 1024) + b"]")
    assert len(bomb) < config.max_body_bytes
    async with AsyncTestClient(app=create_app(config)) as client:
        response = await client.post("/api/v1/logs/batch", content=bomb, headers=_headers("gzip"))
    assert response.status_code == 413, response.text
    assert response.json()["limit"] == "max_body_bytes"
