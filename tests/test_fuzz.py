"""API fuzz: schemathesis generates requests for every operation of the served OpenAPI
document and calls the app in-process (ASGI). No answer may be a 5xx, break the
document's own response schemas, or be an error that is not problem JSON.

The default run is bounded (a few examples per operation); `-m slow` runs many more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from services.gateway.admin.tenancy import SYSTEM_TENANT, first_admin_key
from services.gateway.app import create_app

_INTERNALS = ("Traceback", 'File "', "psycopg")


@pytest.fixture
def fuzz_schema(api_settings) -> Iterator[Any]:
    app = create_app(api_settings)
    loaded = schemathesis.openapi.from_asgi("/schema/openapi.json", app)
    try:
        # Live tail never ends a response: its own tests cover it.
        yield loaded.exclude(path="/api/v1/logs/stream")
    finally:
        # Closes the app's pool and Redis client before the test database is dropped.
        asgi.shutdown_lifespans()


@pytest.fixture
def fuzz_headers(api_settings) -> dict[str, str]:
    key = asyncio.run(first_admin_key(api_settings))
    assert key is not None
    # Tenant-data routes refuse an admin key that names no tenant (400): naming its own
    # (`system`) lets the fuzz reach their parameters and bodies.
    return {"Authorization": f"Bearer {key}", "X-Tenant-ID": str(SYSTEM_TENANT)}


def _otlp_status(response: Any, content_type: str) -> None:
    """OTLP's error body: a google.rpc.Status (JSON for a JSON request)."""
    if content_type.startswith("application/x-protobuf"):
        return
    if not content_type.startswith("application/json"):
        raise AssertionError(f"{response.status_code} is {content_type!r}, not an OTLP Status")
    status = response.json()
    if set(status) != {"code", "message"} or not isinstance(status["code"], int):
        raise AssertionError(f"not a google.rpc.Status: {status}")


def _loki_text(response: Any, content_type: str) -> None:
    """Loki's error body: the reason as plain text (http.Error)."""
    if not content_type.startswith("text/plain") or not response.text.strip():
        raise AssertionError(f"{response.status_code} is {content_type!r}, not Loki's text")


# Routes of another protocol answer errors in its shape, not problem JSON.
OWN_ERROR_SHAPES: dict[str, Any] = {
    "/v1/logs": _otlp_status,
    "/api/v1/otlp/v1/logs": _otlp_status,
}


@schemathesis.check
def errors_are_problem_json(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx/5xx is RFC 9457 problem JSON that reveals nothing internal (or, on a
    route of another protocol, that protocol's error shape)."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    own_shape = OWN_ERROR_SHAPES.get(case.path)
    if case.path.startswith("/loki/"):  # Loki's API, push and read: Loki's text
        own_shape = _loki_text
    if own_shape is not None:
        own_shape(response, content_type)
        if any(s in response.text for s in _INTERNALS):
            raise AssertionError("internals in an answer")
        return True
    if not content_type.startswith("application/problem+json"):
        raise AssertionError(f"{response.status_code} is {content_type!r}, not problem JSON")
    problem = response.json()
    missing = {"type", "title", "status", "detail"} - problem.keys()
    if missing or problem["status"] != response.status_code:
        raise AssertionError(f"not a problem document: {problem}")
    leaked = [s for s in _INTERNALS if s in response.text]
    if leaked:
        raise AssertionError(f"internals in an answer: {leaked}")
    return True


# Schema-valid data may still be refused with 422: what JSON Schema cannot say (the
# accepted time window, level names in any case, NUL characters, per-tenant limits) is
# validated by the API. Every other built-in check runs.
EXCLUDED_CHECKS = [positive_data_acceptance]
# In a query string every value is text: "-4.4e16" or "{}" is a valid service name, so
# "a number where the schema says string" is not invalid there. Bodies keep the check.
EXCLUDED_FOR_QUERIES = [*EXCLUDED_CHECKS, negative_data_rejection]


def fuzz(schema: Any, headers: dict[str, str], *, examples: int, long: bool) -> None:
    """Every operation, valid and invalid requests; all failures reported together.
    The short run is derandomized (the same requests every time, so the default suite
    is stable); the long run explores freshly and shrinks what it finds.
    (Driven by hand: schemathesis' pytest plugin does not run under pytest 9.)"""
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:
        excluded = EXCLUDED_FOR_QUERIES if operation.method.upper() == "GET" else EXCLUDED_CHECKS
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=not long,
                phases=list(Phase) if long else [Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def run(case: Any) -> None:
                case.call_and_validate(headers=headers, excluded_checks=excluded)

            try:
                run()
            except Unsatisfiable:
                # No invalid request exists for an operation without parameters or body.
                assert mode is GenerationMode.NEGATIVE, operation.label
            except (Exception, BaseExceptionGroup) as exc:  # all operations, all failures
                failures.append(f"{mode.value} {operation.label}: {exc!r}"[:3000])
    assert not failures, "\n\n".join(failures)


# 40 requests per operation through the whole app: 80 s here, twice that on a slow machine.
@pytest.mark.timeout(600)
def test_api_fuzz(fuzz_schema: Any, fuzz_headers: dict[str, str]) -> None:
    fuzz(fuzz_schema, fuzz_headers, examples=20, long=False)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_api_fuzz_long(fuzz_schema: Any, fuzz_headers: dict[str, str]) -> None:
    fuzz(fuzz_schema, fuzz_headers, examples=200, long=True)
