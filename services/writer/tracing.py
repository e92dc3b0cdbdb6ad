"""The writer's spans (tracing on: shared/tracing.py): one per batch, one per transaction,
one per COPY. With tracing off each is a no-op context (the batch loop pays a flag test).

- `writer batch` (CONSUMER): a gathered batch, from storing to XACK and the live-tail
  publish. A child of the first request among its messages whose span was sampled, so
  it shows inside that request's trace; a root span when none carries a trace context.
- `writer transaction`: one attempt to store messages in one transaction (partitions,
  inbox claim, COPY, rollups, tail sequence, COMMIT), LINKED to the request span of every
  message it holds (at most OTEL_SPAN_LINK_COUNT_LIMIT, 128 by default). A batch that
  PostgreSQL refuses is retried one message at a time: one transaction span each.
- `COPY log_entries` (CLIENT): the binary COPY, which the psycopg instrumentation does
  not see (ARCHITECTURE.md, pitfall 10). The other statements are its siblings, traced
  by that instrumentation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind

from services.writer.consumer import Delivery
from shared import tracing

_tracer = tracing.tracer("minisource.writer")


def _contexts(deliveries: Sequence[Delivery]) -> list[SpanContext]:
    found = []
    for d in deliveries:
        if d.message is not None and d.message.traceparent:
            context = tracing.remote_span_context(d.message.traceparent, d.message.tracestate)
            if context is not None:
                found.append(context)
    return found


@contextlib.contextmanager
def batch_span(deliveries: Sequence[Delivery]) -> Iterator[Span]:
    if not tracing.enabled():
        yield trace.INVALID_SPAN
        return
    contexts = _contexts(deliveries)
    parent = next((c for c in contexts if c.trace_flags.sampled), None) or next(
        iter(contexts), None
    )
    with _tracer.start_as_current_span(
        "writer batch",
        context=trace.set_span_in_context(NonRecordingSpan(parent)) if parent else None,
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "redis",
            "messaging.operation.type": "process",
            "messaging.batch.message_count": len(deliveries),
            "minisource.rows": sum(d.rows for d in deliveries),
        },
    ) as span:
        yield span


@contextlib.contextmanager
def transaction_span(deliveries: Sequence[Delivery]) -> Iterator[Span]:
    if not tracing.enabled():
        yield trace.INVALID_SPAN
        return
    with _tracer.start_as_current_span(
        "writer transaction",
        links=tracing.links_to(_contexts(deliveries)),
        attributes={
            "db.system.name": "postgresql",
            "messaging.batch.message_count": len(deliveries),
        },
    ) as span:
        yield span


def record_stored(span: Span, *, messages: int, repeated: int, rows: int) -> None:
    """What the transaction committed: new messages and their rows, and redelivered
    messages the inbox found already stored."""
    if span.is_recording():
        span.set_attributes(
            {
                "minisource.stored_messages": messages,
                "minisource.repeated_messages": repeated,
                "minisource.rows": rows,
            }
        )


@contextlib.contextmanager
def copy_span(deliveries: Sequence[Delivery]) -> Iterator[Span]:
    if not tracing.enabled():
        yield trace.INVALID_SPAN
        return
    with _tracer.start_as_current_span(
        "COPY log_entries",
        kind=SpanKind.CLIENT,
        attributes={
            "db.system.name": "postgresql",
            "db.operation.name": "COPY",
            "db.collection.name": "log_entries",
            "db.query.text": "COPY log_entries FROM STDIN (FORMAT BINARY)",
            "minisource.rows": sum(d.rows for d in deliveries),
        },
    ) as span:
        yield span
