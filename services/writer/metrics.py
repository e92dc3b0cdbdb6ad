"""The writer's Prometheus families (README, "Metrics"), served on METRICS_PORT+3
(shared/metrics.py). No label names a tenant or a stream message."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Histogram

from shared.metrics import LATENCY_BUCKETS, NAMESPACE, ROWS_BUCKETS, service_registry

REGISTRY: Final = service_registry()

BATCHES: Final = Counter(
    "writer_batches",
    "Batches committed.",
    namespace=NAMESPACE,
    registry=REGISTRY,
)
ROWS: Final = Counter(
    "writer_rows",
    "Rows stored.",
    namespace=NAMESPACE,
    registry=REGISTRY,
)
MESSAGES: Final = Counter(
    "writer_messages",
    "Stream messages acknowledged: stored, or repeated (already stored).",
    ["outcome"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
BATCH_ROWS: Final = Histogram(
    "writer_batch_rows",
    "Rows per committed batch.",
    namespace=NAMESPACE,
    buckets=ROWS_BUCKETS,
    registry=REGISTRY,
)
BATCH_DURATION: Final = Histogram(
    "writer_batch_duration_seconds",
    "From a gathered batch to its acknowledgement (partitions, COPY, rollups, COMMIT, XACK).",
    namespace=NAMESPACE,
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
COMMIT_DURATION: Final = Histogram(
    "writer_commit_duration_seconds",
    "The COMMIT of a batch's transaction.",
    namespace=NAMESPACE,
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
DEAD_LETTERS: Final = Counter(
    "writer_dead_letters",
    "Messages parked on the dead-letter stream.",
    namespace=NAMESPACE,
    registry=REGISTRY,
)
PAUSES: Final = Counter(
    "writer_pauses",
    "Times a writer pipeline paused because PostgreSQL or Redis failed.",
    namespace=NAMESPACE,
    registry=REGISTRY,
)

for _outcome in ("stored", "repeated"):
    MESSAGES.labels(_outcome)
