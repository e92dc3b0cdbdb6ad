"""The evaluator's Prometheus families (README, "Metrics"), served on METRICS_PORT+1
(shared/metrics.py). No label names a tenant or a rule: their number is not bounded."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Histogram

from shared.metrics import LATENCY_BUCKETS, NAMESPACE, service_registry

REGISTRY: Final = service_registry()

ROUNDS: Final = Counter(
    "alert_rounds",
    "Evaluation rounds: completed, or unavailable (PostgreSQL or Redis away).",
    ["outcome"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
ROUND_DURATION: Final = Histogram(
    "alert_round_duration_seconds",
    "Time of a completed evaluation round.",
    namespace=NAMESPACE,
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
EVALUATIONS: Final = Counter(
    "alert_evaluations",
    "Rule evaluations: evaluated, skipped (the rule changed meanwhile) or failed.",
    ["outcome"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
STATE_CHANGES: Final = Counter(
    "alert_state_changes",
    "Alert events recorded: firing or resolved.",
    ["kind"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
CHANNELS: Final = ("webhook", "slack", "email", "alertmanager")
NOTIFICATIONS: Final = Counter(
    "alert_notifications",
    "Notification attempts by channel type and outcome: sent, retry or failed.",
    ["channel", "outcome"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
NOTIFICATION_DURATION: Final = Histogram(
    "alert_notification_duration_seconds",
    "Time of one attempt to send a notification.",
    ["channel"],
    namespace=NAMESPACE,
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)

for _outcome in ("completed", "unavailable"):
    ROUNDS.labels(_outcome)
for _outcome in ("evaluated", "skipped", "failed"):
    EVALUATIONS.labels(_outcome)
for _kind in ("firing", "resolved"):
    STATE_CHANGES.labels(_kind)
for _channel in CHANNELS:
    for _outcome in ("sent", "retry", "failed"):
        NOTIFICATIONS.labels(_channel, _outcome)


def channel_label(channel_type: str) -> str:
    """The channel's type as a label: a known type, else `other` (the stored value is
    validated by the API, but a label must never take an unbounded value)."""
    return channel_type if channel_type in CHANNELS else "other"
