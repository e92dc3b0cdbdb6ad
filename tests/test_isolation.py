"""Tenant isolation: tenant A's key never reads or changes tenant B's data, through any
endpoint (the matrix covers every route the app serves), and row-level security hides
B's rows even from SQL that forgets the tenant predicate (the second wall)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient
from psycopg import errors
from psycopg.types.json import Jsonb

from services.gateway.query.store import fetch_entries, get_entry
from shared.db import READER_ROLE, tenant_scope
from shared.filters import LogFilter, compile_filter
from tests.keyring import add_key, add_tenant, key_headers
from tests.routes import Endpoint, endpoints, needs_caller

B_SERVICE = "svc-b-secret"
B_MESSAGE = "b-secret-message"


@dataclass
class World:
    """Two tenants with data in every table; A's key has ingest, query and alerts scopes,
    and A has an admin-scope key too (for the routes that take it: retention)."""

    client: AsyncTestClient  # type: ignore[type-arg]
    db: psycopg.Connection
    a: uuid.UUID
    b: uuid.UUID
    a_key: str
    a_admin_key: str
    b_entry_ids: list[str]
    b_policy_id: uuid.UUID
    b_alert_id: uuid.UUID

    @property
    def markers(self) -> list[str]:
        return [
            str(self.b),
            B_SERVICE,
            B_MESSAGE,
            "trace-b",
            "req-b",
            str(self.b_policy_id),
            *self.b_entry_ids,
        ]

    def headers(self, tenant: uuid.UUID | None = None) -> dict[str, str]:
        return key_headers(self.a_key, tenant)

    def keys_of_a(self) -> list[dict[str, str]]:
        """A's keys: without and with the admin scope."""
        return [key_headers(self.a_key), key_headers(self.a_admin_key)]

    def b_snapshot(self) -> list[Any]:
        """Everything of B's that A must not change."""
        queries = [
            "SELECT id, message, service_name FROM log_entries WHERE tenant_id = %s ORDER BY id",
            "SELECT minute, service_name, count FROM log_counts WHERE tenant_id = %s ORDER BY 1, 2",
            "SELECT * FROM log_retention_policies WHERE tenant_id = %s",
            "SELECT * FROM log_alerts WHERE tenant_id = %s ORDER BY id",
            "SELECT * FROM alert_states WHERE tenant_id = %s ORDER BY alert_id",
            "SELECT * FROM alert_events WHERE tenant_id = %s ORDER BY id",
            "SELECT * FROM alert_notifications WHERE tenant_id = %s ORDER BY id",
            "SELECT * FROM tenants WHERE id = %s",
            "SELECT id, revoked_at FROM api_keys WHERE tenant_id = %s ORDER BY id",
        ]
        return [self.db.execute(q, (self.b,)).fetchall() for q in queries]


def _entries(tag: str, service: str, message: str) -> list[dict[str, Any]]:
    return [
        {
            "service_name": service,
            "level": level,
            "message": f"{message} {i}",
            "trace_id": f"trace-{tag}",
            "request_id": f"req-{tag}",
            "user_id": f"user-{tag}",
            "environment": "production",
            "metadata": {"marker": f"{tag}-secret"},
        }
        for i, level in enumerate(["INFO", "ERROR", "WARN"])
    ]


def _seed_policy_and_alert(
    db: psycopg.Connection, tenant: uuid.UUID, service: str = B_SERVICE
) -> tuple[uuid.UUID, uuid.UUID]:
    """A retention policy and an alert rule that fires, with its state, its firing event
    and that event's notification."""
    policy_id, alert_id, event_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    db.execute(
        "INSERT INTO log_retention_policies (id, tenant_id, retention_days) VALUES (%s, %s, 9)",
        (policy_id, tenant),
    )
    channel = {"type": "webhook", "url": f"https://hooks.example/{tenant}", "secret": f"{tenant}"}
    db.execute(
        """INSERT INTO log_alerts (id, tenant_id, name, filter, threshold, window_mins, channels)
           VALUES (%s, %s, %s, %s, 5, 10, %s)""",
        (alert_id, tenant, f"alert-{tenant}", Jsonb({"service_name": service}), Jsonb([channel])),
    )
    group = Jsonb({"service_name": service})
    db.execute(
        """INSERT INTO alert_events (id, tenant_id, alert_id, group_key, kind, observed_count,
               threshold, condition, window_mins, window_start, window_end, started_at)
           VALUES (%s, %s, %s, %s, 'firing', 7, 5, 'above', 10, now() - interval '10 min',
                   now(), now())""",
        (event_id, tenant, alert_id, group),
    )
    db.execute(
        """INSERT INTO alert_states (alert_id, group_key, tenant_id, state, since, last_count,
               open_event_id)
           VALUES (%s, %s, %s, 'firing', now(), 7, %s)""",
        (alert_id, group, tenant, event_id),
    )
    db.execute(
        """INSERT INTO alert_notifications (id, tenant_id, alert_id, event_id, channel_index,
               channel, payload)
           VALUES (%s, %s, %s, %s, 0, %s, '{}')""",
        (uuid.uuid4(), tenant, alert_id, event_id, Jsonb(channel)),
    )
    return policy_id, alert_id


@pytest.fixture
async def world(api_client, api_settings, admin_key, writer, db) -> AsyncIterator[World]:
    a, b = await add_tenant(api_settings), await add_tenant(api_settings)
    b_ids: list[str] = []
    for tenant, entries in (
        (a, _entries("a", "svc-a", "a-message")),
        (b, _entries("b", B_SERVICE, B_MESSAGE)),
    ):
        response = await api_client.post(
            "/api/v1/logs/batch", json={"entries": entries}, headers=key_headers(admin_key, tenant)
        )
        assert response.status_code == 202, response.text
        if tenant == b:
            b_ids = response.json()["ids"]
    await writer.drain()
    _seed_policy_and_alert(db, a, "svc-a")
    b_policy, b_alert = _seed_policy_and_alert(db, b)
    await add_key(api_settings, b, "ingest", "query")
    a_key = await add_key(api_settings, a, "ingest", "query", "alerts")
    a_admin_key = await add_key(api_settings, a, "admin")
    yield World(api_client, db, a, b, a_key, a_admin_key, b_ids, b_policy, b_alert)


Probe = Callable[[World, Endpoint], Awaitable[None]]


def _no_b_data(world: World, response: Any, endpoint: Endpoint, *sent: str) -> None:
    """No marker of B in the answer, except what A itself sent (echoed in a 404)."""
    assert response.status_code < 500, (endpoint, response.text)
    leaked = [m for m in world.markers if m in response.text and m not in sent]
    assert not leaked, (endpoint, leaked, response.text[:500])


def _refused(response: Any, endpoint: Endpoint, *statuses: int) -> None:
    assert response.status_code in (statuses or (403, 404)), (endpoint, response.text)


async def _ingest(world: World, endpoint: Endpoint) -> None:
    entry = {"service_name": "x", "level": "INFO", "message": "m", "tenant_id": str(world.b)}
    body: Any = entry if endpoint.template == "/api/v1/logs" else {"entries": [entry]}
    response = await world.client.post(endpoint.url(), json=body, headers=world.headers())
    _refused(response, endpoint, 422)


async def _otlp_export(world: World, endpoint: Endpoint) -> None:
    """No tenant travels in an OTLP record: one naming B (and B's service) is A's (B's
    snapshot, checked at the end, is unchanged), and the answer says nothing of B."""
    attributes = [
        {"key": key, "value": {"stringValue": value}}
        for key, value in (("tenant_id", str(world.b)), ("tenant.id", str(world.b)))
    ]
    record = {"severityNumber": 9, "body": {"stringValue": "m"}, "attributes": attributes}
    body = {
        "resourceLogs": [
            {
                "resource": {"attributes": attributes},
                "scopeLogs": [{"logRecords": [record]}],
            }
        ]
    }
    response = await world.client.post(endpoint.url(), json=body, headers=world.headers())
    assert response.status_code == 200, (endpoint, response.text)
    _no_b_data(world, response, endpoint, str(world.b))


async def _ingest_ndjson(world: World, endpoint: Endpoint) -> None:
    """A record naming B's tenant is refused (422: the only record)."""
    line = b'{"message": "m", "tenant_id": "%s"}\n' % str(world.b).encode()
    headers = {**world.headers(), "Content-Type": "application/x-ndjson"}
    response = await world.client.post(endpoint.url(), content=line, headers=headers)
    _refused(response, endpoint, 422)


async def _loki_push(world: World, endpoint: Endpoint) -> None:
    """X-Scope-OrgID naming B is 403; labels naming B store A's entry (B's snapshot,
    checked at the end, is unchanged)."""
    now = str(int(datetime.now(UTC).timestamp() * 1e9))
    body = {"streams": [{"stream": {"tenant_id": str(world.b)}, "values": [[now, "m"]]}]}
    naming_b = await world.client.post(
        endpoint.url(), json=body, headers={**world.headers(), "X-Scope-OrgID": str(world.b)}
    )
    _refused(naming_b, endpoint, 403)
    response = await world.client.post(endpoint.url(), json=body, headers=world.headers())
    assert response.status_code == 204, (endpoint, response.text)


async def _loki_read(world: World, endpoint: Endpoint) -> None:
    """Loki's read API: selectors naming B's service, trace or words, and metric queries
    over every service, find nothing of B's (the tenant is the caller's); X-Scope-OrgID
    naming B is 403."""
    end = datetime.now(UTC) + timedelta(minutes=5)
    window = {
        "start": str(int((end - timedelta(days=1)).timestamp() * 1e9)),
        "end": str(int(end.timestamp() * 1e9)),
    }
    queries = [
        '{service_name="' + B_SERVICE + '"}',
        '{service_name=~".+"}',
        '{service_name=~".+"} |= "secret"',
        '{service_name=~".+"} | trace_id="trace-b"',
        'sum by (service_name) (count_over_time({service_name=~".+"}[1h]))',
    ]
    for query in queries:
        params = {"query": query, "match[]": query, "time": window["end"], **window}
        response = await world.client.request(
            endpoint.method,
            endpoint.url(name="service_name"),
            params=params,
            headers=world.headers(),
        )
        _no_b_data(world, response, endpoint)
    naming_b = await world.client.request(
        endpoint.method,
        endpoint.url(name="service_name"),
        params=window,
        headers={**world.headers(), "X-Scope-OrgID": str(world.b)},
    )
    _refused(naming_b, endpoint, 403)


async def _list(world: World, endpoint: Endpoint) -> None:
    for params in ({}, {"service_name": B_SERVICE}, {"trace_id": "trace-b"}, {"search": "secret"}):
        response = await world.client.get(endpoint.url(), params=params, headers=world.headers())
        _no_b_data(world, response, endpoint)


async def _post_filter(world: World, endpoint: Endpoint) -> None:
    for body in ({}, {"service_name": B_SERVICE}, {"trace_id": "trace-b"}, {"search": "secret"}):
        response = await world.client.post(endpoint.url(), json=body, headers=world.headers())
        _no_b_data(world, response, endpoint)
    naming_b = await world.client.post(
        endpoint.url(), json={"tenant_id": str(world.b)}, headers=world.headers()
    )
    _refused(naming_b, endpoint, 403)


async def _by_id(world: World, endpoint: Endpoint) -> None:
    for entry_id in world.b_entry_ids:
        response = await world.client.get(endpoint.url_all(entry_id), headers=world.headers())
        _refused(response, endpoint, 404)
        _no_b_data(world, response, endpoint, entry_id)


async def _by_lookup(world: World, endpoint: Endpoint) -> None:
    """Guessing B's trace or request id: 404, exactly as for an id that never existed."""
    value = "trace-b" if "trace" in endpoint.template else "req-b"
    response = await world.client.get(endpoint.url_all(value), headers=world.headers())
    _no_b_data(world, response, endpoint, value)
    _refused(response, endpoint, 404)


async def _read_only(world: World, endpoint: Endpoint) -> None:
    response = await world.client.get(endpoint.url(), headers=world.headers())
    _no_b_data(world, response, endpoint)


async def _admin_only(world: World, endpoint: Endpoint) -> None:
    response = await world.client.request(
        endpoint.method, endpoint.url_all(str(world.b)), json={}, headers=world.headers()
    )
    _refused(response, endpoint, 403)


async def _header_only(world: World, endpoint: Endpoint) -> None:
    """Long-lived (live tail): here only the universal check (X-Tenant-ID of B is 403),
    made before a stream starts; what a stream carries is checked by
    tests/test_tail.py::test_tenant_stream_never_carries_another_tenants_logs."""


async def _policies_of_a(world: World, endpoint: Endpoint) -> None:
    """A's admin key lists A's policy, never B's; A's other key is refused."""
    for headers in world.keys_of_a():
        response = await world.client.get(endpoint.url(), headers=headers)
        _no_b_data(world, response, endpoint)
    listed = await world.client.get(endpoint.url(), headers=key_headers(world.a_admin_key))
    assert [p["tenant_id"] for p in listed.json()["policies"]] == [str(world.a)]


async def _policy_of_b(world: World, endpoint: Endpoint) -> None:
    """B's tenant named in the path: 403; B's policy id: 404 (as an unknown id), with or
    without B named in the body."""
    target = str(world.b) if "/tenant/" in endpoint.template else str(world.b_policy_id)
    for headers in world.keys_of_a():
        for body in ({"tenant_id": str(world.b), "retention_days": 1}, {"retention_days": 1}):
            response = await world.client.request(
                endpoint.method, endpoint.url_all(target), json=body, headers=headers
            )
            _refused(response, endpoint)
            _no_b_data(world, response, endpoint, target, str(world.b))


async def _policy_for_b(world: World, endpoint: Endpoint) -> None:
    """Creating a policy naming B: 403 (B's snapshot, checked at the end, is unchanged)."""
    body = {"tenant_id": str(world.b), "retention_days": 1}
    for headers in world.keys_of_a():
        response = await world.client.post(endpoint.url(), json=body, headers=headers)
        _refused(response, endpoint, 403)
        _no_b_data(world, response, endpoint, str(world.b))


async def _operator_only(world: World, endpoint: Endpoint) -> None:
    """What spans every tenant (the janitor's runs): not for a tenant's keys, admin or not."""
    for headers in world.keys_of_a():
        response = await world.client.get(endpoint.url(), headers=headers)
        _refused(response, endpoint, 403)


async def _alert_of_b(world: World, endpoint: Endpoint) -> None:
    # A valid rule: a PUT must get as far as the ownership check (an unknown field, such
    # as tenant_id, would be refused first).
    body = {"name": "x", "threshold": 1, "window_mins": 1}
    response = await world.client.request(
        endpoint.method, endpoint.url_all(str(world.b_alert_id)), json=body, headers=world.headers()
    )
    _refused(response, endpoint, 404)  # as for a rule that never existed
    _no_b_data(world, response, endpoint, str(world.b_alert_id), str(world.b))


async def _create_for_b(world: World, endpoint: Endpoint) -> None:
    """Creating with B's tenant_id in the body: refused, or created for A (the snapshot
    of B, checked at the end, proves which)."""
    body = {
        "tenant_id": str(world.b),
        "retention_days": 1,
        "name": "x",
        "threshold": 1,
        "window_mins": 1,
    }
    response = await world.client.post(endpoint.url(), json=body, headers=world.headers())
    _no_b_data(world, response, endpoint, str(world.b))


# Every route needing a caller, and how A tries to get at B through it. A route missing
# here fails test_every_route_is_in_the_isolation_matrix: add it with its probe.
MATRIX: dict[tuple[str, str], Probe] = {
    ("POST", "/api/v1/logs"): _ingest,
    ("POST", "/api/v1/logs/batch"): _ingest,
    ("POST", "/v1/logs"): _otlp_export,
    ("POST", "/api/v1/otlp/v1/logs"): _otlp_export,
    ("POST", "/api/v1/logs/ndjson"): _ingest_ndjson,
    ("POST", "/loki/api/v1/push"): _loki_push,
    ("GET", "/loki/api/v1/query_range"): _loki_read,
    ("POST", "/loki/api/v1/query_range"): _loki_read,
    ("GET", "/loki/api/v1/query"): _loki_read,
    ("POST", "/loki/api/v1/query"): _loki_read,
    ("GET", "/loki/api/v1/labels"): _loki_read,
    ("GET", "/loki/api/v1/label/{}/values"): _loki_read,
    ("GET", "/loki/api/v1/series"): _loki_read,
    ("POST", "/loki/api/v1/series"): _loki_read,
    ("GET", "/loki/api/v1/index/stats"): _loki_read,
    ("GET", "/loki/api/v1/index/volume"): _loki_read,
    ("POST", "/loki/api/v1/index/volume"): _loki_read,
    ("GET", "/loki/api/v1/index/volume_range"): _loki_read,
    ("POST", "/loki/api/v1/index/volume_range"): _loki_read,
    ("GET", "/loki/api/v1/detected_labels"): _loki_read,
    ("GET", "/loki/api/v1/detected_fields"): _loki_read,
    ("GET", "/loki/api/v1/status/buildinfo"): _loki_read,
    ("GET", "/api/v1/logs"): _list,
    ("POST", "/api/v1/logs/query"): _post_filter,
    ("GET", "/api/v1/logs/{}"): _by_id,
    ("GET", "/api/v1/logs/trace/{}"): _by_lookup,
    ("GET", "/api/v1/logs/request/{}"): _by_lookup,
    ("GET", "/api/v1/logs/stats"): _list,
    ("POST", "/api/v1/logs/aggregate"): _post_filter,
    ("GET", "/api/v1/logs/services"): _list,
    ("GET", "/api/v1/logs/storage"): _read_only,
    ("GET", "/api/v1/logs/stream"): _header_only,
    ("GET", "/api/v1/retention"): _policies_of_a,
    ("POST", "/api/v1/retention"): _policy_for_b,
    ("GET", "/api/v1/retention/tenant/{}"): _policy_of_b,
    ("PUT", "/api/v1/retention/{}"): _policy_of_b,
    ("DELETE", "/api/v1/retention/{}"): _policy_of_b,
    ("GET", "/api/v1/retention/status"): _operator_only,
    ("GET", "/api/v1/alerts"): _read_only,
    ("POST", "/api/v1/alerts"): _create_for_b,
    ("GET", "/api/v1/alerts/{}"): _alert_of_b,
    ("PUT", "/api/v1/alerts/{}"): _alert_of_b,
    ("DELETE", "/api/v1/alerts/{}"): _alert_of_b,
    ("POST", "/api/v1/alerts/{}/enable"): _alert_of_b,
    ("POST", "/api/v1/alerts/{}/disable"): _alert_of_b,
    ("GET", "/api/v1/alerts/{}/events"): _alert_of_b,
    ("POST", "/api/v1/alerts/{}/test"): _alert_of_b,
    ("POST", "/api/v1/admin/tenants"): _admin_only,
    ("GET", "/api/v1/admin/tenants"): _admin_only,
    ("GET", "/api/v1/admin/tenants/{}"): _admin_only,
    ("PUT", "/api/v1/admin/tenants/{}/limits"): _admin_only,
    ("POST", "/api/v1/admin/keys"): _admin_only,
    ("GET", "/api/v1/admin/keys"): _admin_only,
    ("POST", "/api/v1/admin/keys/{}/revoke"): _admin_only,
    ("GET", "/api/v1/admin/audit"): _admin_only,
}


def test_every_route_is_in_the_isolation_matrix(api_client) -> None:
    missing = [
        (e.method, e.template)
        for e in endpoints(api_client.app)
        if needs_caller(e) and (e.method, e.template) not in MATRIX
    ]
    assert not missing, f"add these routes to MATRIX in {__file__}: {missing}"


async def test_tenant_a_never_reads_or_changes_tenant_b_through_any_route(world) -> None:
    before = world.b_snapshot()
    probed = []
    for endpoint in endpoints(world.client.app):
        if not needs_caller(endpoint):
            continue
        naming_b = await world.client.request(
            endpoint.method, endpoint.url_all(str(world.b)), json={}, headers=world.headers(world.b)
        )
        assert naming_b.status_code == 403, (endpoint, naming_b.text)
        await MATRIX[(endpoint.method, endpoint.template)](world, endpoint)
        probed.append(endpoint.template)
    assert world.b_snapshot() == before
    assert "/api/v1/logs/{}" in probed


# -- The second wall: row-level security under the reader role. ------------------------


@pytest.fixture
def two_tenants(db) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """Rows of A and B in every tenant table, written as the owner (as writers do);
    returns A, B and the id of one of B's entries."""
    a, b, b_entry = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    for tenant, entry_id in ((a, uuid.uuid4()), (b, b_entry)):
        db.execute("INSERT INTO tenants (id, name) VALUES (%s, %s)", (tenant, str(tenant)))
        db.execute(
            """INSERT INTO log_entries (id, tenant_id, "timestamp", level, service_name, message,
                                        trace_id)
               VALUES (%s, %s, %s, 2, 'svc', 'hello', 'trace-1')""",
            (entry_id, tenant, now),
        )
        db.execute(
            """INSERT INTO log_counts (tenant_id, minute, service_name, level, count, bytes)
               VALUES (%s, date_trunc('minute', now()), 'svc', 2, 1, 10)""",
            (tenant,),
        )
        db.execute(
            """INSERT INTO log_counts_packed (tenant_id, hour, service_name, level, environment,
                                              minutes, counts, bytes)
               VALUES (%s, date_trunc('hour', now()) - interval '2 days', 'svc', 2, '',
                       '{0, 5}', '{1, 2}', '{10, 20}')""",
            (tenant,),
        )
        _seed_policy_and_alert(db, tenant)
    return a, b, b_entry


# Tables whose tenant column is not `tenant_id`.
_TENANT_COLUMN = {"tenants": "id"}
# Readable tables that hold nothing of any tenant: the rollup watermark, one timestamp.
_NO_TENANT_DATA = {"rollup_watermark"}


def _reader_tables(db: psycopg.Connection) -> list[str]:
    """Every table or view the reader role may read."""
    rows = db.execute(
        """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')
              AND has_table_privilege(%s, c.oid, 'SELECT')""",
        (READER_ROLE,),
    )
    return sorted(r[0] for r in rows)


async def test_a_query_without_tenant_predicate_sees_only_its_tenant(db, pool, two_tenants):
    a, _, _ = two_tenants
    tables = _reader_tables(db)
    assert {"log_entries", "log_counts", "log_retention_policies", "log_alerts"} <= set(tables)
    async with tenant_scope(pool, a) as conn:
        for table in sorted(set(tables) - _NO_TENANT_DATA):
            column = _TENANT_COLUMN.get(table, "tenant_id")
            cur = await conn.execute(
                psycopg.sql.SQL("SELECT DISTINCT {} FROM {}").format(
                    psycopg.sql.Identifier(column), psycopg.sql.Identifier(table)
                )
            )
            seen = {row[0] for row in await cur.fetchall()}
            assert seen <= {a}, (table, seen)
    seeded = db.execute("SELECT count(DISTINCT tenant_id) FROM log_entries").fetchone()
    assert seeded == (2,)


async def test_the_repository_called_with_the_wrong_tenant_gets_nothing(pool, two_tenants):
    a, b, b_entry = two_tenants
    async with tenant_scope(pool, a) as conn:
        assert await get_entry(conn, b, b_entry) is None
        cur = await conn.execute("SELECT count(*) FROM log_entries WHERE tenant_id = %s", (b,))
        assert await cur.fetchone() == (0,)
        cur = await conn.execute("SELECT count(*) FROM log_entries WHERE trace_id = 'trace-1'")
        assert await cur.fetchone() == (1,)
    async with tenant_scope(pool, b) as conn:
        assert await get_entry(conn, b, b_entry) is not None


async def test_prepared_lookups_keep_each_tenant_to_its_own(pool, two_tenants):
    """Lookups by trace and by id are prepared statements, run on one connection for
    every tenant and, from the sixth run on, with one generic plan: each tenant still
    gets only its own entries, and a tenant passed in that is not the scope's gets none."""
    a, b, b_entry = two_tenants
    trace = compile_filter(LogFilter(trace_id="trace-1"), datetime.now(UTC))
    for _ in range(7):
        for tenant in (a, b):
            async with tenant_scope(pool, tenant) as conn:
                entries = await fetch_entries(conn, tenant, trace, sort="asc", limit=10)
                assert [e.tenant_id for e in entries] == [tenant]
                assert await fetch_entries(conn, a if tenant == b else b, trace, sort="asc",
                                           limit=10) == []  # fmt: skip
                assert (await get_entry(conn, b, b_entry) is None) == (tenant == a)
    async with tenant_scope(pool, a) as conn:
        cur = await conn.execute(
            "SELECT generic_plans FROM pg_prepared_statements WHERE statement LIKE %s",
            ('%"trace_id" = $%',),
        )
        generic_runs = [row[0] for row in await cur.fetchall()]
    assert generic_runs and min(generic_runs) > 0, "the lookup ran with a generic plan"


async def test_writes_reach_only_the_scoped_tenant(db, pool, two_tenants):
    a, b, _ = two_tenants
    async with tenant_scope(pool, a) as conn:
        cur = await conn.execute("UPDATE log_alerts SET name = 'renamed'")
        assert cur.rowcount == 1
        cur = await conn.execute("DELETE FROM log_retention_policies")
        assert cur.rowcount == 1
    with pytest.raises(errors.InsufficientPrivilege):
        async with tenant_scope(pool, a) as conn:
            await conn.execute(
                """INSERT INTO log_alerts (id, tenant_id, name, threshold, window_mins)
                   VALUES (%s, %s, 'planted', 1, 1)""",
                (uuid.uuid4(), b),
            )
    with pytest.raises(errors.InsufficientPrivilege):
        async with tenant_scope(pool, a) as conn:
            await conn.execute("UPDATE log_alerts SET tenant_id = %s", (b,))
    assert db.execute("SELECT name FROM log_alerts WHERE tenant_id = %s", (b,)).fetchall() == [
        (f"alert-{b}",)
    ]
    assert db.execute(
        "SELECT count(*) FROM log_retention_policies WHERE tenant_id = %s", (b,)
    ).fetchone() == (1,)


@pytest.mark.parametrize("table", ["api_keys", "admin_audit", "ingest_inbox", "log_settings"])
async def test_tables_outside_the_wall_cannot_be_read_in_tenant_scope(pool, table) -> None:
    with pytest.raises(errors.InsufficientPrivilege):
        async with tenant_scope(pool, uuid.uuid4()) as conn:
            await conn.execute(
                psycopg.sql.SQL("SELECT 1 FROM {}").format(psycopg.sql.Identifier(table))
            )


async def test_partitions_cannot_be_read_directly_even_when_created_later(db, pool) -> None:
    later = datetime.now(UTC) + timedelta(days=400)
    (partition,) = db.execute("SELECT ensure_log_partition(%s)", (later,)).fetchone()
    partitions = [
        r[0]
        for r in db.execute(
            "SELECT inhrelid::regclass::text FROM pg_inherits "
            "WHERE inhparent = 'log_entries'::regclass"
        )
    ]
    assert partition in partitions and len(partitions) >= 2
    for name in partitions:
        with pytest.raises(errors.InsufficientPrivilege):
            async with tenant_scope(pool, uuid.uuid4()) as conn:
                await conn.execute(
                    psycopg.sql.SQL("SELECT 1 FROM {}").format(psycopg.sql.Identifier(name))
                )


async def test_without_a_tenant_the_reader_role_sees_no_row(pool, two_tenants) -> None:
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(
            psycopg.sql.SQL("SET LOCAL ROLE {}").format(psycopg.sql.Identifier(READER_ROLE))
        )
        cur = await conn.execute("SELECT count(*) FROM log_entries")
        assert await cur.fetchone() == (0,)


async def test_a_pooled_connection_goes_back_as_owner_without_tenant(settings, pool, two_tenants):
    a, _, _ = two_tenants
    async with tenant_scope(pool, a) as conn:
        cur = await conn.execute("SELECT current_user")
        assert await cur.fetchone() == (READER_ROLE,)
    with pytest.raises(RuntimeError):
        async with tenant_scope(pool, a):
            raise RuntimeError("a failed query")
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT current_user, coalesce(current_setting('app.tenant_id', true), '')"
        )
        assert await cur.fetchone() == (settings.postgres_user, "")
        cur = await conn.execute("SELECT count(DISTINCT tenant_id) FROM log_entries")
        assert await cur.fetchone() == (2,)


def test_every_table_the_reader_role_reads_is_behind_the_wall(db) -> None:
    """A new table holding tenant data needs `SELECT enable_tenant_rls('t')` (a view: a
    filter on app.tenant_id, or security_invoker, which applies its tables' policies:
    the reader then needs grants on those tables, so they are checked here too) in its
    migration, or no grant to the reader role at all."""
    unguarded = []
    # What is exempt holds no tenant column at all.
    for table in _NO_TENANT_DATA:
        columns = db.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0",
            (table,),
        ).fetchall()
        assert not {c[0] for c in columns} & {"tenant_id", "id"}, table
    for table in sorted(set(_reader_tables(db)) - _NO_TENANT_DATA):
        kind, rls, definition, options = db.execute(
            """SELECT relkind, relrowsecurity,
                      CASE WHEN relkind = 'v' THEN pg_get_viewdef(oid) END,
                      coalesce(reloptions, '{}')
                 FROM pg_class WHERE oid = %s::regclass""",
            (table,),
        ).fetchone()
        if kind == "v":
            if "security_invoker=true" in options:
                continue
            if "app.tenant_id" not in definition and "app_tenant_id()" not in definition:
                unguarded.append(table)
        elif not rls:
            unguarded.append(table)
    assert not unguarded
