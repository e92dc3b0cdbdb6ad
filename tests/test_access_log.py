"""The gateway's access log: one structured line per request, naming the route template
(never the raw path), the status, the duration, the tenant and the bytes; none at all
with ACCESS_LOG=false."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import replace
from typing import Any

import msgspec
from litestar.testing import AsyncTestClient

from services.gateway.app import create_app
from shared.logsetup import JsonFormatter
from shared.settings import Settings
from tests.conftest import TENANT, tenant_headers

ENTRY = {"service_name": "access-log-test", "level": "INFO", "message": "m"}
ACCESS = "gateway.access"


def lines(caplog: Any) -> list[dict[str, Any]]:
    return [r.fields for r in caplog.records if r.name == ACCESS]


async def test_each_request_logs_one_line_with_its_route_status_tenant_and_bytes(
    client, caplog
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    body = msgspec.json.encode(ENTRY)
    entry_id = uuid.uuid4()
    ingest = await client.post("/api/v1/logs", content=body, headers=tenant_headers())
    missing = await client.get(f"/api/v1/logs/{entry_id}", headers=tenant_headers())
    anonymous = await client.get("/api/v1/logs")
    unknown = await client.get("/no/such/path")
    wrong_method = await client.delete("/api/v1/logs/query", headers=tenant_headers())
    logged = lines(caplog)
    assert [(line["method"], line["route"], line["status"]) for line in logged] == [
        ("POST", "/api/v1/logs", 202),
        ("GET", "/api/v1/logs/{entry_id}", 404),
        ("GET", "/api/v1/logs", 401),
        ("GET", None, 404),
        ("DELETE", None, 405),
    ]
    assert [r.status_code for r in (ingest, missing, anonymous, unknown, wrong_method)] == [
        line["status"] for line in logged
    ]
    assert [line["tenant_id"] for line in logged] == [TENANT, TENANT, None, None, None]
    assert logged[0]["bytes"] == len(ingest.content)
    assert logged[0]["request_bytes"] == len(body)
    assert logged[1]["bytes"] == len(missing.content)
    assert all(line["duration_ms"] >= 0 for line in logged)
    assert str(entry_id) not in caplog.text  # the route template, not the raw path


async def test_the_line_is_one_json_object_with_the_fields(client, caplog) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    await client.get("/api/v1/logs", headers=tenant_headers())
    (record,) = [r for r in caplog.records if r.name == ACCESS]
    line = json.loads(JsonFormatter("gateway").format(record))
    assert line["logger"] == ACCESS and line["level"] == "INFO"
    assert line["message"] == "GET /api/v1/logs 200"
    assert line["route"] == "/api/v1/logs" and line["status"] == 200
    assert line["tenant_id"] == str(TENANT)
    assert {"method", "duration_ms", "bytes", "request_bytes"} <= line.keys()


async def test_access_log_false_logs_nothing(settings, caplog) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    assert Settings.from_env({"ACCESS_LOG": "false"}).access_log is False
    assert Settings.from_env({}).access_log is True
    quiet = create_app(replace(settings, access_log=False))
    async with AsyncTestClient(app=quiet) as client:
        response = await client.post("/api/v1/logs", json=ENTRY, headers=tenant_headers())
        await client.get("/no/such/path")
    assert response.status_code == 202
    assert lines(caplog) == []
