"""The gateway's Prometheus families (README, "Metrics", lists each with its labels).

Labels take values from closed sets only (route templates, reasons, shard numbers),
never a tenant, a raw path or a client-chosen method: a label fed by callers would grow
a series per distinct value without bound. Reasons are created up front, so every series
exists (at 0) from the first scrape and `rate()` sees the first event.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

from shared.metrics import LATENCY_BUCKETS, NAMESPACE, service_registry

REGISTRY: Final = service_registry()

HTTP_REQUEST_DURATION: Final = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request, by method, route template and status.",
    ["method", "route", "status"],
    namespace=NAMESPACE,
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
HTTP_IN_FLIGHT: Final = Gauge(
    "http_requests_in_flight",
    "HTTP requests being answered now.",
    namespace=NAMESPACE,
    registry=REGISTRY,
)

# Ingest.
INGEST_ACCEPTED: Final = Counter(
    "ingest_entries_accepted",
    "Log entries queued for storage.",
    namespace=NAMESPACE,
    registry=REGISTRY,
)
REJECT_REASONS: Final = (
    "invalid",
    "too_many_entries",
    "rate_limited",
    "backlog_full",
    "unavailable",
)
INGEST_REJECTED: Final = Counter(
    "ingest_entries_rejected",
    "Log entries not queued, by reason.",
    ["reason"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
INGEST_BYTES: Final = Counter(
    "ingest_received_bytes",
    "Bytes of ingest request bodies read.",
    namespace=NAMESPACE,
    registry=REGISTRY,
)
INGEST_REPLAYS: Final = Counter(
    "ingest_replays",
    "Ingest requests answered again for a repeated Idempotency-Key.",
    namespace=NAMESPACE,
    registry=REGISTRY,
)

# The streams, read from Redis at each scrape (services/gateway/scrape.py).
REDIS_UP: Final = Gauge(
    "redis_up",
    "1 when this scrape could read the streams from Redis.",
    namespace=NAMESPACE,
    registry=REGISTRY,
)
STREAM_BACKLOG: Final = Gauge(
    "stream_backlog_messages",
    "Messages on the ingest shard (queued or being written).",
    ["shard"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
STREAM_PENDING: Final = Gauge(
    "stream_pending_messages",
    "Messages of the shard read by a writer and not yet acknowledged.",
    ["shard"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
STREAM_OLDEST_AGE: Final = Gauge(
    "stream_oldest_message_age_seconds",
    "Age of the oldest message on the shard (0 when empty).",
    ["shard"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
STREAM_MAX_BACKLOG: Final = Gauge(
    "stream_max_backlog_messages",
    "STREAM_MAX_BACKLOG: messages per shard past which ingest answers 503.",
    namespace=NAMESPACE,
    registry=REGISTRY,
)
DEAD_LETTERS: Final = Gauge(
    "dead_letter_messages",
    "Messages on the dead-letter stream.",
    namespace=NAMESPACE,
    registry=REGISTRY,
)

# Queries.
QUERY_DURATION: Final = Histogram(
    "query_duration_seconds",
    "Time to answer a successful query request, by route template.",
    ["endpoint"],
    namespace=NAMESPACE,
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
QUERY_SLOT_WAIT: Final = Histogram(
    "query_slot_wait_seconds",
    "Time a query waited for one of QUERY_CONCURRENCY slots.",
    namespace=NAMESPACE,
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
QUERY_REFUSAL_REASONS: Final = ("busy", "timeout", "store_unavailable")
QUERY_REFUSED: Final = Counter(
    "query_refused",
    "Queries answered 503, by reason.",
    ["reason"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
CACHE_KINDS: Final = ("list", "stats", "aggregate", "services", "storage")
CACHE_RESULTS: Final = ("hit", "miss", "bypass", "off")
CACHE_REQUESTS: Final = Counter(
    "query_cache_requests",
    "Answers through the query cache, by kind and result.",
    ["kind", "result"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)

# Live tail.
TAIL_CLIENTS: Final = Gauge(
    "tail_clients",
    "Open live tail streams.",
    namespace=NAMESPACE,
    registry=REGISTRY,
)
TAIL_EVENTS_SENT: Final = Counter(
    "tail_events_sent",
    "Log events written to live tail clients.",
    namespace=NAMESPACE,
    registry=REGISTRY,
)
TAIL_DROPPED_EVENTS: Final = Counter(
    "tail_dropped_events",
    "Log events discarded for live tail clients too slow to read them.",
    namespace=NAMESPACE,
    registry=REGISTRY,
)
TAIL_DROP_REASONS: Final = (
    "slow_client",
    "shutdown",
    "unavailable",
    "resume_window",
    "unknown_position",
)
TAIL_DROP_NOTICES: Final = Counter(
    "tail_drop_notices",
    "`dropped` events sent to live tail clients, by reason.",
    ["reason"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)

for _reason in REJECT_REASONS:
    INGEST_REJECTED.labels(_reason)
for _reason in QUERY_REFUSAL_REASONS:
    QUERY_REFUSED.labels(_reason)
for _kind in CACHE_KINDS:
    for _result in CACHE_RESULTS:
        CACHE_REQUESTS.labels(_kind, _result)
for _reason in TAIL_DROP_REASONS:
    TAIL_DROP_NOTICES.labels(_reason)


def rejected(reason: str, entries: int) -> None:
    if entries > 0:
        INGEST_REJECTED.labels(reason).inc(entries)
