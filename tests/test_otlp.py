"""OTLP/HTTP logs (POST /v1/logs, /api/v1/otlp/v1/logs): what the OpenTelemetry SDK
exports, in protobuf and in JSON, is stored with its fields mapped and its trace and
span ids; refused requests get OTLP's own answers (google.rpc.Status, partial_success,
Retry-After), nothing of them is stored, and nothing is a 500.

The SDK tests export to a real gateway and writer (tests/live_pipeline.py) through the
real exporters, configured by environment variables as a user configures them; the
limits that need other settings use the app in-process.
"""

from __future__ import annotations

import base64
import gzip
import inspect
import json
import logging
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from litestar.testing import AsyncTestClient
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.json.http._log_exporter import OTLPLogExporter as JsonExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as ProtoExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from services.gateway.admin.tenancy import TenantLimits
from services.gateway.app import create_app
from services.gateway.otlp.mapping import level_of
from tests.conftest import tenant_headers
from tests.keyring import add_key, add_tenant
from tests.live_pipeline import Pipeline, live_pipeline

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
PATHS = ("/v1/logs", "/api/v1/otlp/v1/logs")


@pytest.fixture(scope="module")
def otlp(base_settings, tmp_path_factory) -> Iterator[Pipeline]:
    """A real gateway (API keys, as deployed) and writer."""
    logs = tmp_path_factory.mktemp("otlp")
    with live_pipeline(base_settings, logs, auth_mode="api_key", auth_cache_seconds=0.0) as p:
        yield p


@pytest.fixture
async def http(otlp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=otlp.url, timeout=30) as client:
        yield client


async def _tenant(otlp: Pipeline, *scopes: str, limits: TenantLimits | None = None):
    tenant = await add_tenant(otlp.settings, limits=limits)
    return tenant, await add_key(otlp.settings, tenant, *(scopes or ("ingest",)))  # type: ignore[arg-type]


def _auth(key: str, content_type: str = PROTOBUF, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": content_type, **extra}


# -- The real SDK. ----------------------------------------------------------------------

RESOURCE = {
    "service.name": "checkout",
    "host.name": "web-1",
    "deployment.environment.name": "staging",
    "k8s.pod.name": "checkout-7d9f",
}


def _export_with_the_sdk(exporter: Any) -> list[dict[str, Any]]:
    """Logs written inside spans through Python logging and through the Logs API, each
    exported at once; what each record should become (its expected row)."""
    tracer = TracerProvider(resource=Resource.create(RESOURCE)).get_tracer("test")
    provider = LoggerProvider(resource=Resource.create(RESOURCE))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    name = f"shop.payments.{uuid.uuid4().hex[:6]}"
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    with warnings.catch_warnings():  # the SDK's own handler: deprecated, still common
        warnings.simplefilter("ignore", DeprecationWarning)
        handler = LoggingHandler(level=logging.DEBUG, logger_provider=provider)
    logger.addHandler(handler)
    expected: list[dict[str, Any]] = []
    try:
        with tracer.start_as_current_span("checkout") as span:
            ids = span.get_span_context()
            trace_id, span_id = f"{ids.trace_id:032x}", f"{ids.span_id:016x}"
            for level, method in [
                ("DEBUG", logger.debug),
                ("INFO", logger.info),
                ("WARN", logger.warning),
                ("ERROR", logger.error),
                ("FATAL", logger.critical),
            ]:
                line = _line() + 1
                method("payment %s", level.lower(), extra={"order.id": "o-42", "cents": 1250})
                expected.append(
                    {
                        "level": level,
                        "message": f"payment {level.lower()}",
                        "source": f"{__file__}:{line}",
                        "trace_id": trace_id,
                        "span_id": span_id,
                        "metadata": {"order.id": "o-42", "cents": 1250, "otel.scope.name": name},
                    }
                )
            with tracer.start_as_current_span("refund") as inner:
                inner_ids = inner.get_span_context()
                provider.get_logger("refunds").emit(
                    severity_number=SeverityNumber.WARN2,
                    severity_text="WARNING",
                    body={"event": "refund", "amount": 3, "lines": ["a", "b"]},
                    attributes={"user.id": "u-7", "request.id": "r-9", "payment.method": "card"},
                )
                expected.append(
                    {
                        "level": "WARN",
                        "message": '{"event":"refund","amount":3,"lines":["a","b"]}',
                        "source": None,
                        "trace_id": f"{inner_ids.trace_id:032x}",
                        "span_id": f"{inner_ids.span_id:016x}",
                        "user_id": "u-7",
                        "request_id": "r-9",
                        "metadata": {
                            "body.event": "refund",
                            "body.amount": 3,
                            "body.lines": ["a", "b"],
                            "payment.method": "card",
                            "otel.scope.name": "refunds",
                        },
                    }
                )
    finally:
        logger.removeHandler(handler)
        provider.shutdown()
    return expected


def _line() -> int:
    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno


def _check_stored(rows: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    by_message = {r["message"]: r for r in rows}
    assert len(by_message) == len(expected) == len(rows)
    for want in expected:
        row = by_message[want["message"]]
        assert row["service_name"] == "checkout"
        assert row["host"] == "web-1"
        assert row["environment"] == "staging"
        assert {1: "DEBUG", 2: "INFO", 3: "WARN", 4: "ERROR", 5: "FATAL"}[row["level"]] == want[
            "level"
        ]
        assert row["trace_id"] == want["trace_id"]
        assert row["span_id"] == want["span_id"]
        assert row["source"] == want["source"]
        assert row["user_id"] == want.get("user_id")
        assert row["request_id"] == want.get("request_id")
        metadata = row["metadata"]
        for key, value in want["metadata"].items():
            assert metadata[key] == value, (key, metadata)
        # The resource's other attributes, the SDK's own among them.
        assert metadata["k8s.pod.name"] == "checkout-7d9f"
        assert metadata["telemetry.sdk.language"] == "python"
        # Mapped attributes are not repeated in metadata.
        for mapped in ("service.name", "host.name", "code.file.path", "code.line.number"):
            assert mapped not in metadata
        assert abs((row["timestamp"] - datetime.now(UTC)).total_seconds()) < 600


async def test_the_sdk_protobuf_exporter_gzip_and_env_headers_store_every_record(
    otlp, monkeypatch
) -> None:
    tenant, key = await _tenant(otlp)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"Authorization=Bearer {key}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    expected = _export_with_the_sdk(ProtoExporter())
    _check_stored(await otlp.stored(tenant, len(expected)), expected)


async def test_the_sdk_json_exporter_stores_every_record(otlp, monkeypatch) -> None:
    tenant, key = await _tenant(otlp)
    # The second path, with the key in X-API-Key.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", f"{otlp.url}/api/v1/otlp/v1/logs")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"X-API-Key={key}")
    expected = _export_with_the_sdk(JsonExporter())
    _check_stored(await otlp.stored(tenant, len(expected)), expected)


# -- Bodies built by hand: the JSON mapping, partial success. --------------------------


def _value(value: Any) -> AnyValue:
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    raise TypeError(value)


def _request(*records: dict[str, Any], resource: dict[str, Any] | None = None) -> Any:
    """An ExportLogsServiceRequest (opentelemetry-proto's generated class)."""
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    for k, v in (resource or {"service.name": "hand"}).items():
        resource_logs.resource.attributes.append(KeyValue(key=k, value=_value(v)))
    scope_logs = resource_logs.scope_logs.add()
    for fields in records:
        record = scope_logs.log_records.add()
        attributes = fields.pop("attributes", {})
        body = fields.pop("body", None)
        for k, v in fields.items():
            setattr(record, k, v)
        if body is not None:
            record.body.CopyFrom(_value(body))
        for k, v in attributes.items():
            record.attributes.append(KeyValue(key=k, value=_value(v)))
    return request


def _as_json(request: Any) -> bytes:
    """The OTLP JSON mapping of a request: json_format's (camelCase, 64-bit integers as
    strings), with ids in hex instead of the protobuf mapping's base64."""
    document = json_format.MessageToDict(request, use_integers_for_enums=True)
    for resource_logs in document.get("resourceLogs", []):
        for scope_logs in resource_logs.get("scopeLogs", []):
            for record in scope_logs.get("logRecords", []):
                for name in ("traceId", "spanId"):
                    if name in record:
                        record[name] = base64.b64decode(record[name]).hex()
    return json.dumps(document).encode()


NOW_NS = int(datetime.now(UTC).timestamp() * 1e9)
TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN = bytes.fromhex("eee19b7ec3c1b174")


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
async def test_refused_records_are_counted_in_partial_success_the_others_stored(
    otlp, http, encoding
) -> None:
    tenant, key = await _tenant(otlp)
    request = _request(
        {"time_unix_nano": NOW_NS, "severity_number": 9, "body": "kept one",
         "trace_id": TRACE, "span_id": SPAN, "attributes": {"code.filepath": "a.py",
                                                            "code.lineno": 7}},
        {"time_unix_nano": NOW_NS, "severity_text": "LOUD", "body": "unknown level"},
        {"observed_time_unix_nano": NOW_NS, "severity_text": "notice", "body": "kept two"},
        {"time_unix_nano": NOW_NS, "severity_number": 17, "body": ""},
        {"time_unix_nano": NOW_NS, "severity_number": 9, "body": "nul \x00 inside"},
        {"time_unix_nano": NOW_NS, "severity_number": 9, "body": "nul in metadata",
         "attributes": {"k": "v\x00"}},
    )  # fmt: skip
    if encoding == "json":
        body, content_type = _as_json(request), JSON
        assert b'"timeUnixNano": "' in body  # the mapping's string-encoded int64
    else:
        body, content_type = request.SerializeToString(), PROTOBUF
    response = await http.post(PATHS[0], content=body, headers=_auth(key, content_type))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(content_type)
    if encoding == "json":
        partial = response.json()["partialSuccess"]
        rejected, message = int(partial["rejectedLogRecords"]), partial["errorMessage"]
    else:
        answer = ExportLogsServiceResponse.FromString(response.content)
        rejected = answer.partial_success.rejected_log_records
        message = answer.partial_success.error_message
    assert rejected == 4
    assert "log record 1: level: unknown level 'LOUD'" in message, message
    assert "log record 3: message: must not be empty" in message, message
    assert "log record 4: message: must not contain NUL characters" in message, message
    assert "log record 5: metadata" in message, message
    rows = await otlp.stored(tenant, 2)
    first, second = sorted(rows, key=lambda r: r["message"])
    assert (first["message"], first["level"], first["source"]) == ("kept one", 2, "a.py:7")
    assert (first["trace_id"], first["span_id"]) == (TRACE.hex(), SPAN.hex())
    assert first["service_name"] == "hand" and first["host"] is None
    assert (second["message"], second["level"]) == ("kept two", 2)  # notice → INFO


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
async def test_an_empty_request_is_a_success_and_a_wholly_invalid_one_is_400(
    otlp, http, encoding
) -> None:
    _, key = await _tenant(otlp)
    content_type = PROTOBUF if encoding == "protobuf" else JSON
    empty = b"" if encoding == "protobuf" else b"{}"
    response = await http.post(PATHS[1], content=empty, headers=_auth(key, content_type))
    assert response.status_code == 200, response.text
    invalid = _request({"time_unix_nano": 1, "body": "from 1970"})
    body = invalid.SerializeToString() if encoding == "protobuf" else _as_json(invalid)
    response = await http.post(PATHS[1], content=body, headers=_auth(key, content_type))
    status = _status(response, 400)
    assert "log record 0: timestamp: older than the accepted window" in status.message


def test_severity_numbers_fold_into_the_five_levels() -> None:
    expected = ["DEBUG"] * 8 + ["INFO"] * 4 + ["WARN"] * 4 + ["ERROR"] * 4 + ["FATAL"] * 4
    assert [level_of(n, "") for n in range(1, 25)] == expected
    assert level_of(0, "warning") == "warning"  # validation folds WARNING itself
    assert level_of(0, "Emergency") == "FATAL"
    assert level_of(0, "") == "INFO"
    assert level_of(99, "ERROR") == "ERROR"


async def test_attributes_past_the_metadata_limits_are_dropped_and_counted(otlp, http) -> None:
    tenant, key = await _tenant(otlp)
    many = {f"attr.{i:03}": "x" * 10 for i in range(100)}
    request = _request(
        {"time_unix_nano": NOW_NS, "severity_number": 9, "body": "many", "attributes": many},
        resource={"service.name": "wide", "region": "eu", "nested": "no"},
    )
    response = await http.post(PATHS[0], content=request.SerializeToString(), headers=_auth(key))
    assert response.status_code == 200, response.text
    assert response.content == b""  # everything accepted: an empty response
    (row,) = await otlp.stored(tenant, 1)
    metadata = row["metadata"]
    assert len(metadata) == otlp.settings.max_metadata_keys
    # The record's own attributes come first; the resource's did not fit.
    assert metadata["otel.dropped_attributes_count"] == 100 + 2 - 63
    assert "region" not in metadata


# -- Refusals: OTLP's shapes, nothing stored, no 500. ---------------------------------


def _status(response: httpx.Response, status: int) -> Any:
    """The google.rpc.Status of an error answer, in the request's encoding."""
    assert response.status_code == status, (response.status_code, response.text)
    if response.headers["content-type"].startswith(PROTOBUF):
        return Status.FromString(response.content)
    document = response.json()
    assert set(document) == {"code", "message"}, document
    return Status(code=document["code"], message=document["message"])


def _good() -> bytes:
    return _request(
        {"time_unix_nano": NOW_NS, "severity_number": 9, "body": "marker"}
    ).SerializeToString()


def _invalid_utf8_body() -> bytes:
    body = _request({"time_unix_nano": NOW_NS, "body": "PLACEHOLDER"}).SerializeToString()
    return body.replace(b"PLACEHOLDER", b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6\xf5")


def _invalid_utf8_attribute() -> bytes:
    long = "P" * 20_000  # a 3-byte length: read by the protobuf parser, not the fast path
    body = _request(
        {"time_unix_nano": NOW_NS, "body": "m", "attributes": {"k": long}}
    ).SerializeToString()
    return body.replace(b"P" * 4, b"\xc3\x28\xa0\xa1", 1)


def _wrong_trace_id() -> bytes:
    return _request(
        {"time_unix_nano": NOW_NS, "body": "m", "trace_id": b"\x01" * 15}
    ).SerializeToString()


def _json_id(name: str, value: str) -> bytes:
    document = json.loads(_as_json(_request({"time_unix_nano": NOW_NS, "body": "m"})))
    document["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0][name] = value
    return json.dumps(document).encode()


ZIP_BOMB = gzip.compress(b"\x00" * (11 * 1024 * 1024), compresslevel=9)

BAD_REQUESTS = {
    "truncated protobuf": (_good()[:-3], {}, 400),
    "not protobuf": (b"\xff\xff\xff\xff", {}, 400),
    "invalid UTF-8 in the body": (_invalid_utf8_body(), {}, 400),
    "invalid UTF-8 in a long attribute": (_invalid_utf8_attribute(), {}, 400),
    "a trace id of 15 bytes": (_wrong_trace_id(), {}, 400),
    "a JSON trace id of 30 hex digits": (_json_id("traceId", "ab" * 15), {"ct": JSON}, 400),
    "a JSON span id in base64": (_json_id("spanId", "7uGbfsPBsXQ="), {"ct": JSON}, 400),
    "JSON that is not UTF-8": (b'{"resourceLogs": "\xff"}', {"ct": JSON}, 400),
    "JSON of another shape": (b'{"resourceLogs": 5}', {"ct": JSON}, 400),
    "a wrong Content-Type": (_good(), {"ct": "text/plain"}, 415),
    "no Content-Type": (_good(), {"ct": ""}, 415),
    "an unsupported Content-Encoding": (_good(), {"Content-Encoding": "br"}, 415),
    "gzip that is not gzip": (_good(), {"Content-Encoding": "gzip"}, 400),
    "a zip bomb": (ZIP_BOMB, {"Content-Encoding": "gzip"}, 413),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
async def test_bad_input_is_refused_in_otlp_shape_and_nothing_is_stored(otlp, http, case) -> None:
    tenant, key = await _tenant(otlp)
    body, extra, status = BAD_REQUESTS[case]
    extra = dict(extra)
    headers = _auth(key, extra.pop("ct", PROTOBUF), **extra) if extra else _auth(key)
    if not headers["Content-Type"]:
        del headers["Content-Type"]
    response = await http.post(PATHS[0], content=body, headers=headers)
    answer = _status(response, status)
    assert answer.code in (3, 8) and answer.message
    assert "Traceback" not in answer.message
    # Then a good export of the same tenant: it, alone, is stored.
    good = await http.post(PATHS[0], content=_good(), headers=_auth(key))
    assert good.status_code == 200, good.text
    (row,) = await otlp.stored(tenant, 1)
    assert row["message"] == "marker"
    assert otlp.gateway.running()


async def test_a_body_over_max_body_bytes_is_413(otlp, http) -> None:
    _, key = await _tenant(otlp)
    body = b"\x00" * (otlp.settings.max_body_bytes + 1)
    response = await http.post(PATHS[0], content=body, headers=_auth(key))
    assert _status(response, 413).code == 8


async def test_credentials_are_checked_as_on_every_route(otlp, http) -> None:
    tenant, query_only = await _tenant(otlp, "query")
    response = await http.post(PATHS[0], content=_good(), headers={"Content-Type": PROTOBUF})
    assert _status(response, 401).code == 16
    response = await http.post(PATHS[0], content=_good(), headers=_auth(query_only))
    assert _status(response, 403).code == 7
    _, ingest_key = await _tenant(otlp)
    naming_other = _auth(ingest_key, **{"X-Tenant-ID": str(tenant)})
    assert _status(await http.post(PATHS[1], content=_good(), headers=naming_other), 403)
    assert otlp.count(tenant) == 0


async def test_the_rate_limit_is_429_with_retry_after(otlp, http) -> None:
    _, key = await _tenant(otlp, limits=TenantLimits(ingest_logs_per_second=1, max_batch_entries=1))
    # A full bucket holds two seconds of rate: the third export at once is refused.
    statuses = []
    for _ in range(5):
        response = await http.post(PATHS[0], content=_good(), headers=_auth(key))
        statuses.append(response.status_code)
        if response.status_code == 429:
            break
    assert statuses[0] == 200 and statuses[-1] == 429, statuses
    assert _status(response, 429).code == 8
    assert int(response.headers["Retry-After"]) >= 1


# -- In-process: trusted_header mode, backpressure. ------------------------------------


@pytest.fixture
async def small_backlog(settings) -> AsyncIterator[AsyncTestClient]:  # type: ignore[type-arg]
    config = replace(settings, stream_shards=1, stream_max_backlog=1)
    async with AsyncTestClient(app=create_app(config)) as client:
        yield client


async def test_trusted_header_tenant_and_backpressure_503_with_retry_after(
    small_backlog, writer, db
) -> None:
    headers = {**tenant_headers(), "Content-Type": JSON}
    body = _as_json(_request({"time_unix_nano": NOW_NS, "severity_number": 13, "body": "w"}))
    first = await small_backlog.post(PATHS[0], content=body, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json() == {}
    full = await small_backlog.post(PATHS[0], content=body, headers=headers)
    status = _status(full, 503)
    assert status.code == 14 and "STREAM_MAX_BACKLOG" in status.message
    assert full.headers["Retry-After"]
    await writer.drain()
    assert db.execute("SELECT message, level FROM log_entries").fetchall() == [("w", 3)]
