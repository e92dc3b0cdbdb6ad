"""One mistake, one answer, whatever the route: a body field that does not fit is 422
naming it, a body that is not JSON is 415, a body over MAX_BODY_BYTES is 413 naming the
setting, an empty body says it is empty, and no path answers an HTML page for an error."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from services.gateway.admin.tenancy import TenantLimits
from services.gateway.app import create_app
from services.gateway.stats.windows import INTERVALS
from shared.db import make_pool
from tests.conftest import tenant_headers
from tests.keyring import add_key, add_tenant, key_headers
from tests.routes import endpoints, error_detail, own_error_shape

ENTRY = {"service_name": "errors-test", "level": "INFO", "message": "m"}


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/logs", {**ENTRY, "colour": "red"}),
        ("/api/v1/logs/query", {"search": "a", "colour": "red"}),
        ("/api/v1/logs/aggregate", {"interval": "1h", "colour": "red"}),
    ],
)
async def test_an_unknown_body_field_is_422_naming_it(client, path, body) -> None:
    response = await client.post(path, json=body, headers=tenant_headers())
    refused = problem(response, 422)
    assert "colour" in refused["detail"]
    assert [e["field"] for e in refused["errors"]] == ["colour"]


async def test_a_bad_aggregate_interval_lists_the_valid_ones(client) -> None:
    response = await client.post(
        "/api/v1/logs/aggregate", json={"interval": "2h"}, headers=tenant_headers()
    )
    refused = problem(response, 422)
    assert refused["errors"][0]["field"] == "interval"
    assert all(name in refused["detail"] for name in INTERVALS), refused["detail"]


async def test_a_bad_query_parameter_is_400_naming_it(client) -> None:
    response = await client.get(
        "/api/v1/logs", params={"page_size": "many"}, headers=tenant_headers()
    )
    refused = problem(response, 400)
    assert "page_size" in refused["detail"]


async def test_every_route_taking_a_body_refuses_text_plain_with_415(
    api_client, api_settings, admin_key
) -> None:
    tenant = await add_tenant(api_settings)
    headers = {**key_headers(admin_key, tenant), "Content-Type": "text/plain"}
    checked = set()
    for endpoint in endpoints(api_client.app):
        if endpoint.method not in ("POST", "PUT", "PATCH"):
            continue
        response = await api_client.request(
            endpoint.method, endpoint.url(), content=b'{"search": "a"}', headers=headers
        )
        if own_error_shape(endpoint):  # another protocol's answer (Loki's text, OTLP's Status)
            assert response.status_code == 415, (endpoint, response.text)
            assert "text/plain" in error_detail(response), endpoint
        else:
            assert "text/plain" in problem(response, 415)["detail"], endpoint
        checked.add(endpoint.template)
    assert {"/api/v1/logs", "/api/v1/logs/query", "/api/v1/logs/aggregate"} <= checked


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/logs/batch", {"entries": [{**ENTRY, "message": "x" * 3000}]}),
        ("/api/v1/logs/query", {"search": "x" * 3000}),
        ("/api/v1/logs/aggregate", {"search": "x" * 3000}),
    ],
)
async def test_a_body_over_max_body_bytes_is_413_naming_it(settings, path, body) -> None:
    """Litestar's own limit (request_max_body_size), on every route that reads a body."""
    small = replace(settings, max_body_bytes=2048)
    async with AsyncTestClient(app=create_app(small)) as client:
        response = await client.post(path, json=body, headers=tenant_headers())
    detail = problem(response, 413)["detail"]
    assert "MAX_BODY_BYTES" in detail and "2048" in detail


async def test_a_body_over_the_tenants_limit_is_413_naming_max_body_bytes(
    api_client, api_settings
) -> None:
    """The ingest path's own check (a tenant's limit below the deployment's)."""
    tenant = await add_tenant(api_settings, limits=TenantLimits(max_body_bytes=1024))
    key = await add_key(api_settings, tenant, "ingest")
    for path, body in (
        ("/api/v1/logs", {**ENTRY, "message": "x" * 2000}),
        ("/api/v1/logs/batch", {"entries": [{**ENTRY, "message": "x" * 2000}]}),
    ):
        response = await api_client.post(path, json=body, headers=key_headers(key))
        refused = problem(response, 413)
        assert "MAX_BODY_BYTES" in refused["detail"] and "1024" in refused["detail"]
        assert refused["limit"] == "max_body_bytes"


@pytest.mark.parametrize(
    "path",
    ["/api/v1/logs", "/api/v1/logs/batch", "/api/v1/logs/query", "/api/v1/logs/aggregate"],
)
async def test_an_empty_body_says_it_is_empty(client, path) -> None:
    response = await client.post(path, content=b"", headers=tenant_headers())
    detail = problem(response, 400)["detail"]
    assert "empty" in detail and "truncated" not in detail


@pytest.mark.parametrize(
    "path", ["/schema/redoc", "/schema/rapidoc", "/schema/elements", "/schema/nothing"]
)
async def test_no_schema_path_answers_an_html_404(client, path) -> None:
    detail = problem(await client.get(path), 404)["detail"]
    assert "/schema/swagger" in detail


async def test_an_unreachable_database_is_a_503_not_a_500(client, settings) -> None:
    # Every route that reads the database outside the query guard (alert rules, admin)
    # answers 503 with Retry-After when PostgreSQL cannot be reached, not an internal error.
    unreachable = make_pool(
        replace(settings, postgres_port=1), name="unreachable", min_size=0, timeout=0.5
    )
    await unreachable.open(wait=False)
    gateway = client.app.state["gateway"]
    client.app.state["gateway"] = replace(gateway, pool=unreachable)
    try:
        response = await client.get("/api/v1/alerts", headers=tenant_headers())
    finally:
        client.app.state["gateway"] = gateway
        await unreachable.close()
    refused = problem(response, 503)
    assert response.headers["retry-after"] == "2"
    assert "database is unavailable" in refused["detail"]
