"""What the alert rules API answers: rules (channel secrets never), pages of rules and
of events, and the dry run of `POST /api/v1/alerts/{id}/test`."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import msgspec

from shared.alert_events import EventKind
from shared.alerts import (
    AlertmanagerChannel,
    Condition,
    EmailChannel,
    GroupField,
    Severity,
    SlackChannel,
)
from shared.filters import LogFilter

RuleState = Literal["ok", "firing"]
DeliveryStatus = Literal["pending", "sent", "failed"]
Group = dict[str, str | None]


class WebhookChannelOut(msgspec.Struct, tag="webhook", tag_field="type"):
    """A webhook as it is read back: whether it has a secret, never the secret."""

    url: str
    secret_set: bool
    timeout_seconds: float


# The other channels carry nothing secret: they are shown as they were written.
ChannelOut = WebhookChannelOut | SlackChannel | EmailChannel | AlertmanagerChannel


class FiringGroup(msgspec.Struct):
    """A group of the rule that fires now: its values (`{}` without group_by), since
    when, and the count of the evaluation that saw it last."""

    group: Group
    since: datetime
    last_count: int


class AlertRuleOut(msgspec.Struct):
    """A stored rule with its current state.

    `state` is `firing` when any group fires (`firing_groups` lists them).
    `last_evaluation` is what the evaluator saw last (window and counts per group;
    null before the first evaluation); after a PUT it describes the rule as it was until
    the next evaluation.
    """

    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    description: str
    filter: LogFilter
    condition: Condition
    threshold: int
    window_mins: int
    severity: Severity
    channels: list[ChannelOut]
    group_by: list[GroupField]
    cooldown_mins: int
    enabled: bool
    last_triggered: datetime | None
    created_at: datetime
    updated_at: datetime
    state: RuleState
    firing_groups: list[FiringGroup]
    last_evaluation: dict[str, Any] | None


class AlertPage(msgspec.Struct):
    """Rules, oldest first. `next_cursor` (when `has_more`) fetches the next page."""

    alerts: list[AlertRuleOut]
    limit: int
    offset: int
    has_more: bool
    next_cursor: str | None


class DeliveryOut(msgspec.Struct):
    """One channel's notification of an event: `pending` until sent, `failed` after
    ALERT_MAX_ATTEMPTS tries. The channel is named by its position and type only."""

    channel_index: int
    type: str
    status: DeliveryStatus
    attempts: int
    last_error: str | None
    sent_at: datetime | None


class AlertEventOut(msgspec.Struct):
    """A state change of one group: `firing` when it crossed the threshold, `resolved`
    when it stopped (or the rule was disabled, changed or deleted: see `reason`).
    `threshold`, `condition` and `window_mins` are the rule's when it happened."""

    id: uuid.UUID
    alert_id: uuid.UUID
    kind: EventKind
    group: Group
    observed_count: int
    threshold: int
    condition: Condition
    window_mins: int
    window_start: datetime
    window_end: datetime
    started_at: datetime
    resolved_at: datetime | None
    reason: str
    created_at: datetime
    notifications: list[DeliveryOut]


class EventPage(msgspec.Struct):
    """Events, newest first. `next_cursor` (when `has_more`) fetches older ones."""

    events: list[AlertEventOut]
    limit: int
    offset: int
    has_more: bool
    next_cursor: str | None


class GroupCount(msgspec.Struct):
    """What one group counts in the window, and whether that fires the rule."""

    group: Group
    count: int
    would_fire: bool


class AlertTestOut(msgspec.Struct):
    """A dry run: the rule counted now, over the window the evaluator would use (ending
    at the committed `watermark`), with no state, event or notification changed.

    `groups` lists every group with entries and every group the rule keeps a state for
    (count 0 when it has none now); a rule without group_by has the one group `{}`.
    `from_rollups` says whether the rollups answered (else the rows were counted).
    """

    alert_id: uuid.UUID
    condition: Condition
    threshold: int
    window_start: datetime
    window_end: datetime
    watermark: datetime
    from_rollups: bool
    would_fire: bool
    groups: list[GroupCount]
