"""OpenTelemetry tracing for every process, configured only by the standard OTEL_* variables.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set (and
OTEL_SDK_DISABLED is not `true`, OTEL_TRACES_EXPORTER not `none`). Off, nothing is
installed: the API's no-op tracer answers, and the helpers below return at once, so the
hot paths (the gateway per request, the writer per batch) pay a flag test.

On, spans go in batches (OTEL_BSP_*) to the OTLP/HTTP protobuf exporter (the SDK's
`/v1/traces` path under OTEL_EXPORTER_OTLP_ENDPOINT); OTEL_TRACES_SAMPLER[_ARG] picks the
sampler (default `parentbased_always_on`), OTEL_SERVICE_NAME the service (default
`minisource-<process>`). The psycopg and Redis instrumentations trace statements and
commands made inside our spans; a client span without a parent is dropped (see
`_InsideSpansOnly`). README, "Tracing".
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Iterable, Mapping, Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanContext, SpanKind, Tracer, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes, AttributeValue

# Spans still queued at exit get this long to leave: a stopping process must end within
# its bound even when the collector does not answer (the export's own timeout is 10 s).
_SHUTDOWN_SECONDS = 3.0

_W3C = TraceContextTextMapPropagator()
_enabled = False


def endpoint_configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the OTEL_* variables turn tracing on."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )


def configure_tracing(process: str) -> bool:
    """Install the SDK for this process when the environment asks for it; True if it did.
    Called once, at start, before any connection is made (the instrumentations wrap
    connections as they are opened)."""
    global _enabled
    if _enabled or not endpoint_configured():
        return _enabled
    # Imported here: a process with tracing off never loads the exporter (and `requests`)
    # nor the instrumentations.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    resource = Resource.create()
    # Resource.create names an unnamed service "unknown_service…": ours have names.
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: f"minisource-{process}"}))
    # Our own atexit handler (below) bounds the time the last export may take.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.sampler = _InsideSpansOnly(provider.sampler)  # the one OTEL_TRACES_SAMPLER names
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    # Statements only, never their parameters (log content, keys): the default.
    PsycopgInstrumentor().instrument(tracer_provider=provider)
    RedisInstrumentor().instrument(tracer_provider=provider)
    atexit.register(_shutdown, provider)
    _enabled = True
    return True


def _shutdown(provider: TracerProvider) -> None:
    """Export what is queued, for at most _SHUTDOWN_SECONDS."""
    worker = threading.Thread(target=provider.shutdown, name="otel-shutdown", daemon=True)
    worker.start()
    worker.join(_SHUTDOWN_SECONDS)


def enabled() -> bool:
    return _enabled


def tracer(name: str) -> Tracer:
    """The tracer for a module of ours: the SDK's when tracing is on, else the no-op one."""
    return trace.get_tracer(name)


def annotate(attributes: Mapping[str, AttributeValue]) -> None:
    """Add attributes to the current span, if one is being recorded."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(attributes)


def current_trace_context() -> tuple[str | None, str | None]:
    """The current span as W3C `traceparent` and `tracestate` values, to travel inside a
    stream message; (None, None) when tracing is off or no span is current."""
    if not _enabled:
        return None, None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    traceparent = (
        f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
    )
    return traceparent, context.trace_state.to_header() or None


def remote_span_context(traceparent: str | None, tracestate: str | None) -> SpanContext | None:
    """The span a message's `traceparent` names (as the W3C propagator reads it), or None
    when it has none or a malformed one."""
    if not traceparent:
        return None
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    context = trace.get_current_span(_W3C.extract(carrier)).get_span_context()
    return context if context.is_valid else None


def incoming_context(headers: Iterable[tuple[bytes, bytes]]) -> Context | None:
    """The caller's trace from W3C `traceparent`/`tracestate` request headers, if any."""
    carrier = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in headers
        if name in (b"traceparent", b"tracestate")
    }
    return _W3C.extract(carrier) if "traceparent" in carrier else None


def links_to(contexts: Sequence[SpanContext]) -> list[Link]:
    return [Link(context) for context in contexts]


def log_ids() -> tuple[str, str] | None:
    """Trace and span id (hex) of the current span, for a log line; None outside a
    recorded span (an id that leads to no trace in the collector only misleads)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


class _InsideSpansOnly(Sampler):
    """A sampler wrapper: a CLIENT span (a SQL statement, a Redis command) without a parent
    span is dropped; anything else is the configured sampler's decision.

    The instrumentations trace every statement and command, and the loops poll: a
    writer's blocking XREADGROUP every second, the evaluator's scheduler and sender,
    migrations at start. Each would be a trace of one span. Inside a request, a batch, a
    round or a janitor run they have a parent and are kept."""

    def __init__(self, inner: Sampler) -> None:
        self._inner = inner
        self._drop = SamplingResult(Decision.DROP)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if (
            kind is SpanKind.CLIENT
            and not trace.get_current_span(parent_context).get_span_context().is_valid
        ):
            return self._drop
        return self._inner.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"InsideSpansOnly{{{self._inner.get_description()}}}"
