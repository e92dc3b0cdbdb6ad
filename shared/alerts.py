"""Alert rules: their shape, their validation, and how a rule counts its window.

Used by the gateway (the rules API, and `POST /api/v1/alerts/{id}/test`, which counts
without changing state) and by the evaluator (which counts every enabled rule each
tick and keeps the state). A rule's filter is the query API's `LogFilter`, validated by
the same compiler; its window is `window_mins` minutes ending at the pipeline's committed
watermark, never at wall-clock now (shared/streams.py, `committed_watermark`).

Counting takes the same path as stats: from the rollups whenever the filter and the
grouping allow (service, level, min_level, environment), else from the rows in the
window (shared/rollups.py).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
from psycopg import AsyncConnection

from shared import rollups
from shared.errors import FieldError, ValidationFailed
from shared.filters import CompiledFilter, LogFilter, compile_filter
from shared.kept_hours import KeptHours
from shared.model import Level

Severity = Literal["info", "warning", "critical"]
Condition = Literal["above", "below"]
GroupField = Literal["service_name", "level", "environment", "host"]
GROUP_FIELDS: tuple[GroupField, ...] = ("service_name", "level", "environment", "host")

MAX_WINDOW_MINS = 7 * 24 * 60
MAX_COOLDOWN_MINS = 7 * 24 * 60
MAX_CHANNELS = 10
MAX_THRESHOLD = 1_000_000_000
# An HTTP(S) URL, nothing else: a webhook must not reach file:// or other schemes. No
# control characters (\s leaves out NUL, which jsonb cannot store).
_URL = r"^https?://[^\s/?#\x00-\x1f\x7f]+[^\s\x00-\x1f\x7f]*$"
# Printable text: PostgreSQL cannot store NUL, UTF-8 cannot hold lone surrogates.
_TEXT = r"^[^\x00-\x1f\x7f\ud800-\udfff]*$"

Url = Annotated[str, msgspec.Meta(max_length=2048, pattern=_URL)]
Secret = Annotated[str, msgspec.Meta(min_length=16, max_length=256, pattern=_TEXT)]
EmailAddress = Annotated[
    str, msgspec.Meta(max_length=254, pattern=r"^[^@\s<>,;\x00-\x1f]+@[^@\s<>,;\x00-\x1f]+$")
]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=_TEXT)]
# Several lines allowed; NUL is not (PostgreSQL text cannot hold it).
Description = Annotated[str, msgspec.Meta(max_length=2048, pattern=r"^[^\x00]*$")]


class WebhookChannel(msgspec.Struct, tag="webhook", tag_field="type", forbid_unknown_fields=True):
    """A JSON POST signed with `secret` (X-Minisource-Signature: t=<unix time>,v1=<hex
    HMAC-SHA256 of "<t>.<body>">). The secret is write-only: never returned."""

    url: Url
    # Absent on a PUT: the secret the rule's webhook with this url had is kept, so a
    # client can read, change and write a rule back without knowing it; null removes it.
    secret: Secret | msgspec.UnsetType | None = msgspec.UNSET
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 10.0


class SlackChannel(msgspec.Struct, tag="slack", tag_field="type", forbid_unknown_fields=True):
    """A Slack-compatible incoming webhook (Mattermost, Rocket.Chat take the same)."""

    url: Url


class EmailChannel(msgspec.Struct, tag="email", tag_field="type", forbid_unknown_fields=True):
    """E-mail over SMTP (SMTP_HOST, SMTP_PORT, SMTP_USER, SMTP_PASSWORD, SMTP_FROM)."""

    to: Annotated[list[EmailAddress], msgspec.Meta(min_length=1, max_length=20)]


class AlertmanagerChannel(
    msgspec.Struct, tag="alertmanager", tag_field="type", forbid_unknown_fields=True
):
    """A Prometheus Alertmanager: alerts are POSTed to `<url>/api/v2/alerts`."""

    url: Url


Channel = WebhookChannel | SlackChannel | EmailChannel | AlertmanagerChannel


class AlertRuleIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A rule as a client creates or replaces it (PUT is a full replacement).

    `condition` `above` fires when a group's count in the window is >= threshold;
    `below` when it is < threshold ("the service went silent"). `group_by` keeps one
    state per combination of those fields' values.
    """

    name: Name
    description: Description = ""
    filter: LogFilter = msgspec.field(default_factory=LogFilter)
    condition: Condition = "above"
    threshold: Annotated[int, msgspec.Meta(ge=1, le=MAX_THRESHOLD)]
    window_mins: Annotated[int, msgspec.Meta(ge=1, le=MAX_WINDOW_MINS)]
    severity: Severity = "warning"
    channels: Annotated[list[Channel], msgspec.Meta(max_length=MAX_CHANNELS)] = msgspec.field(
        default_factory=list
    )
    group_by: Annotated[list[GroupField], msgspec.Meta(max_length=4)] = msgspec.field(
        default_factory=list
    )
    cooldown_mins: Annotated[int, msgspec.Meta(ge=0, le=MAX_COOLDOWN_MINS)] = 0
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class AlertRule:
    """A stored rule, as the evaluator and the test endpoint count it."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    filter: LogFilter
    condition: Condition
    threshold: int
    window_mins: int
    severity: Severity
    group_by: tuple[GroupField, ...]
    cooldown_mins: int

    def fires(self, count: int) -> bool:
        return count >= self.threshold if self.condition == "above" else count < self.threshold


def check_rule(rule: AlertRuleIn) -> CompiledFilter:
    """What msgspec cannot check alone: the filter compiles (the query API's rules), has
    no time range of its own (the window is window_mins), and group_by has no repeats.
    Raises ValidationFailed naming each field at fault."""
    errors: list[FieldError] = []
    for name in ("start_time", "end_time"):
        if getattr(rule.filter, name) is not None:
            errors.append(FieldError(f"filter.{name}", "the window is window_mins; omit it"))
    if len(set(rule.group_by)) != len(rule.group_by):
        errors.append(FieldError("group_by", "lists a field twice"))
    try:
        compiled = compile_filter(rule.filter)
    except ValidationFailed as exc:
        errors += [FieldError(f"filter.{e.field}", e.reason) for e in exc.errors]
        compiled = CompiledFilter()
    if errors:
        raise ValidationFailed("the alert rule is not valid", errors=errors)
    return compiled


GroupKey = dict[str, str | None]


@dataclass(frozen=True, slots=True)
class Window:
    """[start, end): the `window_mins` minutes before the committed watermark, exactly,
    not before its minute (which held every notification back by up to a minute). Counting
    is exact for any start and end (whole minutes from the rollups, the two partial
    minutes from rows). Everything accepted before the watermark is stored; an entry
    stamped before it was accepted (by its client, or by the gateway a moment before it
    queues the request) counts from the first tick after it is stored."""

    start: datetime
    end: datetime

    @classmethod
    def ending_at(cls, watermark: datetime, window_mins: int) -> Window:
        return cls(watermark - timedelta(minutes=window_mins), watermark)


@dataclass(frozen=True, slots=True)
class RuleCount:
    """What one evaluation of a rule saw: the count of each group with entries, and
    whether the rollups answered."""

    window: Window
    groups: list[tuple[GroupKey, int]]
    from_rollups: bool

    def count_of(self, key: GroupKey) -> int:
        return next((n for k, n in self.groups if k == key), 0)


def _group_key(fields: tuple[GroupField, ...], values: tuple[Any, ...]) -> GroupKey:
    """The group as JSON-friendly values: levels by name, and an absent environment the
    same whether it was counted from rows (NULL) or rollups ('')."""
    key: GroupKey = {}
    for name, value in zip(fields, values, strict=True):
        if name == "level" and value is not None:
            key[name] = Level(value).name
        else:
            key[name] = value if value not in (None, "") else None
    return key


async def count_rule(
    conn: AsyncConnection[Any], rule: AlertRule, window: Window, kept: KeptHours | None = None
) -> RuleCount:
    """Count the rule's matches in `window`, per group, on a connection in the rule's
    tenant scope (shared/db.py, tenant_scope)."""
    compiled = replace(compile_filter(rule.filter), start=window.start, end=window.end)
    groups, from_rollups = await rollups.count_groups(
        conn, rule.tenant_id, compiled, rule.group_by, kept
    )
    merged: dict[str, tuple[GroupKey, int]] = {}
    for g in groups:
        key = _group_key(rule.group_by, g.key)
        canonical = msgspec.json.encode(key, order="sorted").decode()
        previous = merged.get(canonical, (key, 0))[1]
        merged[canonical] = (key, previous + g.count)
    return RuleCount(window, [merged[k] for k in sorted(merged)], from_rollups)


# The columns `rule_from_row` reads, in its order.
RULE_COLUMNS = (
    "id, tenant_id, name, filter, condition, threshold, window_mins, severity, group_by, "
    "cooldown_mins"
)


def rule_from_row(row: tuple[Any, ...]) -> AlertRule:
    """An AlertRule from a row of RULE_COLUMNS (filter as jsonb, already parsed)."""
    rule_id, tenant_id, name, filter_, condition, threshold, window, severity, group_by, cool = row
    return AlertRule(
        id=rule_id,
        tenant_id=tenant_id,
        name=name,
        filter=msgspec.convert(filter_ or {}, LogFilter),
        condition=condition,
        threshold=int(threshold),
        window_mins=int(window),
        severity=severity,
        group_by=tuple(group_by),
        cooldown_mins=int(cool),
    )
