"""The janitor's Prometheus families (README, "Metrics"), served on METRICS_PORT+2
(shared/metrics.py). Retention counts by reason and stage, never by tenant or day."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Histogram

from shared.metrics import LATENCY_BUCKETS, NAMESPACE, service_registry

REGISTRY: Final = service_registry()

TASKS: Final = ("housekeeping", "retention", "compaction")
RUNS: Final = Counter(
    "janitor_runs",
    "Janitor runs by task and outcome: ok, skipped (another janitor holds the lock), failed.",
    ["task", "outcome"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
RUN_DURATION: Final = Histogram(
    "janitor_run_duration_seconds",
    "Time of a janitor run, by task.",
    ["task"],
    namespace=NAMESPACE,
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
COMPACTION_STEPS: Final = Counter(
    "janitor_compaction_steps",
    "Rollup compaction steps taken.",
    namespace=NAMESPACE,
    registry=REGISTRY,
)
# services/janitor/closed_partitions.py: a rewrite that keeps giving up (log_entries
# always locked at the swap) is what an operator wants to see here.
CLOSED_PARTITION_OUTCOMES: Final = ("settled", "gave_up")
CLOSED_PARTITIONS: Final = Counter(
    "janitor_closed_partitions",
    "Closed partitions rewritten in tenant order with their search index (settled), or "
    "left for the next run because log_entries stayed locked at the swap (gave_up).",
    ["outcome"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
# services/janitor/word_counts.py: a closed day whole, or an hour of a day not closed.
WORD_SPAN_KINDS: Final = ("day", "hour")
WORD_SPANS: Final = Counter(
    "janitor_word_spans",
    "Spans of a tenant's past hours whose words were counted (shared/word_counts.py): a "
    "closed day (day) or an hour of a day not closed (hour).",
    ["span"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
# services/janitor/count_packing.py
PACKED_MINUTES: Final = Counter(
    "janitor_packed_minutes",
    "Minute cells of closed days moved from log_counts into log_counts_packed.",
    namespace=NAMESPACE,
    registry=REGISTRY,
)
# services/janitor/runs.py: Reason and Stage.
REASONS: Final = ("retention", "tenant_quota", "global_quota", "partition")
STAGES: Final = ("archive", "delete", "partition", "quota", "run")
DELETED_ROWS: Final = Counter(
    "retention_deleted_rows",
    "Rows removed by retention, by reason.",
    ["reason"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
DELETED_BYTES: Final = Counter(
    "retention_deleted_bytes",
    "Bytes of the rows removed by retention (as the rollups count them), by reason.",
    ["reason"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
DROPPED_PARTITIONS: Final = Counter(
    "retention_dropped_partitions",
    "Whole partitions dropped by retention.",
    namespace=NAMESPACE,
    registry=REGISTRY,
)
ARCHIVED_ROWS: Final = Counter(
    "retention_archived_rows",
    "Rows written to Parquet archives.",
    namespace=NAMESPACE,
    registry=REGISTRY,
)
ARCHIVED_BYTES: Final = Counter(
    "retention_archived_bytes",
    "Bytes of archive files written.",
    namespace=NAMESPACE,
    registry=REGISTRY,
)
ARCHIVE_FILES: Final = Counter(
    "retention_archive_files",
    "Archive files written.",
    namespace=NAMESPACE,
    registry=REGISTRY,
)
ERRORS: Final = Counter(
    "retention_errors",
    "Retention steps that failed, by stage.",
    ["stage"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)

for _task in TASKS:
    RUN_DURATION.labels(_task)
    for _outcome in ("ok", "skipped", "failed"):
        RUNS.labels(_task, _outcome)
for _reason in REASONS:
    DELETED_ROWS.labels(_reason)
    DELETED_BYTES.labels(_reason)
for _stage in STAGES:
    ERRORS.labels(_stage)
for _outcome in CLOSED_PARTITION_OUTCOMES:
    CLOSED_PARTITIONS.labels(_outcome)
for _kind in WORD_SPAN_KINDS:
    WORD_SPANS.labels(_kind)
