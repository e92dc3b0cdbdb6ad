"""Tracing (README, "Tracing"): one trace from an ingest request to the writer's COPY,
through the real gateway and writer processes exporting to an OTLP/HTTP receiver; the
trace context inside stream messages; trace ids on log lines; tracing off adds nothing."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import signal
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind
from redis import Redis

from shared.logsetup import JsonFormatter, configure_logging
from shared.model import IngestMessage, TracedIngestMessage
from shared.redis_keys import RedisKeys
from shared.streams import decode_message, encode_message
from shared.tracing import _InsideSpansOnly, endpoint_configured, remote_span_context
from tests.conftest import TENANT
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.pipeline import make_batches, post_batch
from tests.polling import wait_until
from tests.processes import Service, free_port, service_env

SERVER, CLIENT, CONSUMER = 2, 3, 5  # opentelemetry.proto.trace.v1.Span.SpanKind


def _find(spans: list[ReceivedSpan], **wanted: Any) -> list[ReceivedSpan]:
    return [s for s in spans if all(getattr(s, k) == v for k, v in wanted.items())]


async def test_an_ingested_batch_is_one_trace_from_its_request_to_the_writers_copy(
    settings, tmp_path
) -> None:
    entries = make_batches(1, 25)[0]
    port = free_port()
    with OtlpReceiver() as receiver:
        # A short export delay (a standard OTEL_* variable) so that spans arrive at once.
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"}
        gateway_env = service_env(replace(settings, server_port=port, log_level="info"), **otel)
        with (
            Service("services.writer", service_env(settings, **otel), tmp_path),
            Service("services.gateway", gateway_env, tmp_path) as gateway,
        ):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

                async def ready() -> bool:
                    with contextlib.suppress(httpx.HTTPError):
                        return (await http.get("/ready")).status_code == 200
                    return False

                await wait_until(ready, within=60, what="the gateway to serve")
                response = await post_batch(http, [*entries, {"level": "INFO"}])
                assert response.status_code == 202, response.text

            def whole_trace() -> tuple[ReceivedSpan, ReceivedSpan] | None:
                spans = receiver.spans()
                requests = _find(spans, name="POST /api/v1/logs/batch")
                copies = _find(spans, name="COPY log_entries")
                # The batch span ends last (after XACK): once it is in, so is the rest.
                batches = _find(spans, name="writer batch")
                return (requests[0], copies[0]) if requests and copies and batches else None

            found = await wait_until(
                whole_trace, within=30, what="the request's and the COPY's spans to be exported"
            )
            access_lines = await wait_until(
                lambda: [
                    line
                    for line in map(json.loads, gateway.output().splitlines())
                    if line.get("logger") == "gateway.access"
                    and line.get("route") == "/api/v1/logs/batch"
                ],
                within=10,
                what="the request's access log line",
            )

        request, copy = found
        spans = receiver.spans()
        by_id = {s.span_id: s for s in spans}

        assert request.service == "minisource-gateway"
        assert request.kind == SERVER
        assert request.parent_span_id == ""
        assert request.attributes["http.request.method"] == "POST"
        assert request.attributes["http.route"] == "/api/v1/logs/batch"
        assert request.attributes["http.response.status_code"] == 202
        assert request.attributes["minisource.tenant_id"] == str(TENANT)
        assert request.attributes["minisource.ingest.accepted"] == 25
        assert request.attributes["minisource.ingest.rejected"] == 1
        # Its Redis commands (rate limit, enqueue) are its children.
        children = _find(spans, parent_span_id=request.span_id, service="minisource-gateway")
        assert any(s.name == "EVALSHA" and s.kind == CLIENT for s in children), children

        # COPY → transaction → batch → the request: one trace.
        assert copy.service == "minisource-writer"
        assert copy.trace_id == request.trace_id
        assert copy.kind == CLIENT
        assert copy.attributes["minisource.rows"] == 25
        transaction = by_id[copy.parent_span_id]
        assert transaction.name == "writer transaction"
        # ... and the transaction is linked to the request span whose message it stored.
        assert (request.trace_id, request.span_id) in transaction.links
        assert transaction.attributes["minisource.stored_messages"] == 1
        assert transaction.attributes["minisource.rows"] == 25
        batch = by_id[transaction.parent_span_id]
        assert batch.name == "writer batch"
        assert batch.kind == CONSUMER
        assert batch.parent_span_id == request.span_id
        # The transaction's statements, traced by the psycopg instrumentation, beside COPY.
        statements = [
            str(s.attributes.get("db.statement") or s.attributes.get("db.query.text", ""))
            for s in spans
            if s.parent_span_id == transaction.span_id and s is not copy
        ]
        assert any("ingest_inbox" in text for text in statements), statements
        assert any("log_counts" in text for text in statements), statements
        # The writer's polls outside any span (XREADGROUP every second) made no trace.
        writer_roots = _find(spans, service="minisource-writer", parent_span_id="")
        assert not [s for s in writer_roots if s.kind == CLIENT]

        # The access log line was written inside the request's span.
        (line,) = access_lines
        assert (line["trace_id"], line["span_id"]) == (request.trace_id, request.span_id)


async def test_a_stopping_process_exports_the_spans_it_still_holds(
    client, settings, db, tmp_path
) -> None:
    with OtlpReceiver() as receiver:
        # Exports every 10 minutes only: what arrives was sent by the exit's flush.
        otel = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "600000",
        }
        with Service("services.writer", service_env(settings, **otel), tmp_path) as writer:
            response = await post_batch(client, make_batches(1, 10)[0])
            assert response.status_code == 202, response.text
            await wait_until(
                lambda: db.execute("SELECT count(*) FROM log_entries").fetchone() == (10,),
                within=30,
                what="the batch to be stored",
            )
            assert not _find(receiver.spans(), name="writer batch")
            writer.signal(signal.SIGTERM)
            assert writer.wait(timeout=15) == 0, writer.output()[-2000:]
        # Messages from a gateway without tracing carry no context: the batch is a root.
        (batch,) = _find(receiver.spans(), name="writer batch")
        assert batch.parent_span_id == "" and batch.service == "minisource-writer"
        assert _find(receiver.spans(), name="COPY log_entries", trace_id=batch.trace_id)


async def test_without_otel_variables_messages_carry_no_trace_context(client, settings) -> None:
    response = await post_batch(client, make_batches(1, 3)[0])
    assert response.status_code == 202, response.text
    keys = RedisKeys.from_settings(settings)
    with contextlib.closing(Redis(host=settings.redis_host, port=settings.redis_port)) as redis:
        messages = [
            fields[b"m"] for shard in keys.all_shards() for _, fields in redis.xrange(shard)
        ]
    (payload,) = messages
    message = decode_message(payload)
    assert (message.traceparent, message.tracestate) == (None, None)
    assert len(message.records) == 3


def test_trace_context_travels_in_the_message_and_old_messages_still_decode() -> None:
    now = datetime.now(UTC)
    plain = encode_message(IngestMessage(TENANT, now, []))
    # The message as it was before trace context existed: three elements, nothing added.
    assert plain[0] == 0x93
    assert decode_message(plain).traceparent is None

    traceparent = f"00-{'ab' * 16}-{'cd' * 8}-01"
    traced = decode_message(
        encode_message(TracedIngestMessage(TENANT, now, [], traceparent, "vendor=x"))
    )
    assert (traced.traceparent, traced.tracestate) == (traceparent, "vendor=x")
    context = remote_span_context(traced.traceparent, traced.tracestate)
    assert context is not None
    assert (context.trace_id, context.span_id) == (int("ab" * 16, 16), int("cd" * 8, 16))
    assert context.trace_flags.sampled and context.is_remote
    assert remote_span_context("00-not-a-trace", None) is None


def _log_line(formatter: JsonFormatter, message: str) -> dict[str, Any]:
    record = logging.LogRecord("test", logging.INFO, __file__, 1, message, None, None)
    return dict(json.loads(formatter.format(record)))


def test_log_lines_carry_the_trace_and_span_ids_inside_a_recorded_span() -> None:
    provider = TracerProvider(sampler=ALWAYS_ON)
    formatter = JsonFormatter("test")
    assert "trace_id" not in _log_line(formatter, "outside")
    with provider.get_tracer("test").start_as_current_span("work") as span:
        line = _log_line(formatter, "inside")
        context = span.get_span_context()
    assert line["trace_id"] == f"{context.trace_id:032x}"
    assert line["span_id"] == f"{context.span_id:016x}"
    assert line["message"] == "inside"
    assert "trace_id" not in _log_line(formatter, "after")


def test_log_level_filters_the_lines_of_a_process(settings) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging(replace(settings, log_level="warning"), "test")
        out = io.StringIO()
        root.handlers[0].stream = out  # type: ignore[attr-defined]
        logging.getLogger("writer").info("hidden")
        logging.getLogger("writer").warning("shown")
        assert [json.loads(x)["message"] for x in out.getvalue().splitlines()] == ["shown"]
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_client_spans_without_a_parent_are_dropped_inside_spans_kept() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=_InsideSpansOnly(ALWAYS_ON))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("XREADGROUP", kind=SpanKind.CLIENT):
        pass
    with (
        tracer.start_as_current_span("writer batch", kind=SpanKind.CONSUMER),
        tracer.start_as_current_span("INSERT", kind=SpanKind.CLIENT),
    ):
        pass
    assert sorted(s.name for s in exporter.get_finished_spans()) == ["INSERT", "writer batch"]
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_tracing_is_on_only_with_an_endpoint_and_not_disabled() -> None:
    endpoint = "http://jaeger:4318"
    assert not endpoint_configured({})
    assert endpoint_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
    assert endpoint_configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint + "/v1/traces"})
    assert not endpoint_configured(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SDK_DISABLED": "true"}
    )
    assert not endpoint_configured(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_TRACES_EXPORTER": "none"}
    )
