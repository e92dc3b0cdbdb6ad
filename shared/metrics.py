"""What every process's Prometheus metrics share: a registry per service, common buckets,
and the small HTTP server a worker process (writer, evaluator, janitor) serves them on.

Each service keeps its metric objects in its own `metrics.py`, in its own registry
(`service_registry`): a test process that imports several services, or a gateway, then
exposes only its own families. The metric objects are module-level, the client library's
convention: they are plain in-memory counters, thread-safe, and hold no connection.
The gateway serves its registry on its API port (services/gateway/scrape.py); a worker
calls `serve_worker_metrics` with its offset from METRICS_PORT.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    disable_created_metrics,
    start_http_server,
)

from shared.settings import Settings

log = logging.getLogger("metrics")

# No `<counter>_created` series: they would double every counter's and histogram's series
# for a timestamp nobody graphs (rate() handles restarts without it).
disable_created_metrics()  # type: ignore[no-untyped-call]

NAMESPACE = "minisource"

# Port offsets from METRICS_PORT. Writers last: `python -m services` gives writer n the
# port METRICS_PORT + WRITER_OFFSET + n - 1, which then collides with nothing else.
EVALUATOR_OFFSET = 1
JANITOR_OFFSET = 2
WRITER_OFFSET = 3

# Seconds, from a cache hit (~1 ms) to a query at QUERY_TIMEOUT_MS's default (10 s) and
# beyond: 15 buckets.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
# Rows of one writer batch, up to WRITER_BATCH_ROWS's range: 13 buckets.
ROWS_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000)


def service_registry() -> CollectorRegistry:
    """A registry with the process's own figures (CPU, memory, open files, GC) besides the
    service's families."""
    registry = CollectorRegistry(auto_describe=True)
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


def worker_metrics_port(settings: Settings, offset: int) -> int | None:
    """Where a worker serves its metrics, or None when METRICS_PORT=0 disables them."""
    if settings.metrics_port == 0:
        return None
    return settings.metrics_port + offset


@contextlib.contextmanager
def serve_worker_metrics(
    settings: Settings, offset: int, registry: CollectorRegistry
) -> Iterator[int | None]:
    """Serve `registry` on SERVER_HOST:METRICS_PORT+offset (a daemon thread) while the
    block runs; yields the port, or None when disabled or the port cannot be taken.

    A port in use is a warning, not a failure: metrics are for watching the work, and a
    writer that refused to write over them would be the worse outage."""
    port = worker_metrics_port(settings, offset)
    if port is None:
        yield None
        return
    try:
        server, thread = start_http_server(port, addr=settings.server_host, registry=registry)
    except OSError as exc:
        log.warning(
            "metrics not served: cannot listen on %s:%d (%s); set METRICS_PORT so that "
            "each process on this host has its own port",
            settings.server_host,
            port,
            exc.strerror or exc,
        )
        yield None
        return
    log.info("metrics on http://%s:%d/metrics", settings.server_host, port)
    try:
        yield port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
