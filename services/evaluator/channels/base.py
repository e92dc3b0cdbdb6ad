"""What every channel is handed and how it reports a failure."""

from __future__ import annotations

import ssl
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import httpx
import msgspec

from shared.settings import Settings

NOTIFICATION_ID_HEADER = "X-Minisource-Notification-Id"
EVENT_ID_HEADER = "X-Minisource-Event-Id"
USER_AGENT = "minisource-log"


class DeliveryError(Exception):
    """A delivery that did not happen. `permanent`: trying again cannot help (the
    receiver refused the request, the channel is misconfigured), so the notification is
    recorded as failed at once. `retry_after`: the receiver asked for a pause (seconds).

    The message is stored in `last_error` and shown to the tenant: it never holds a
    secret, nor a URL (a Slack webhook's path is its credential)."""

    def __init__(
        self, reason: str, *, permanent: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.retry_after = retry_after


class AlertInfo(msgspec.Struct, frozen=True):
    id: str
    name: str
    severity: str
    condition: Literal["above", "below"]
    threshold: int
    window_mins: int


class Payload(msgspec.Struct, frozen=True):
    """The fields of shared/alert_events.py `payload()` the channels render. Unknown
    fields are ignored: a newer evaluator may add some while this one sends."""

    event_id: str
    status: Literal["firing", "resolved"]
    tenant_id: str
    alert: AlertInfo
    group: dict[str, str | None]
    observed_count: int
    window_start: datetime
    window_end: datetime
    started_at: datetime
    resolved_at: datetime | None = None
    reason: str = ""
    link: str = ""


@dataclass(frozen=True, slots=True)
class Notification:
    """One claimed outbox row. `attempts` counts this try too: it is the claim's fencing
    token (a claim increments it, so an outcome is recorded only by the latest claim)."""

    id: uuid.UUID
    event_id: uuid.UUID
    tenant_id: uuid.UUID
    attempts: int
    channel: dict[str, Any]  # as stored with the event, secret included
    payload: dict[str, Any]  # as stored: the generic webhook sends exactly this

    def identity_headers(self) -> dict[str, str]:
        """Sent with every request so that receivers can drop a repeat (delivery is at
        least once): the row id is the same on every try of one notification."""
        return {NOTIFICATION_ID_HEADER: str(self.id), EVENT_ID_HEADER: str(self.event_id)}


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """The relay of the e-mail channel (SMTP_* settings)."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    sender: str
    starttls: bool
    # None: the system's CA bundle (tests pass one trusting their own certificate).
    tls_context: ssl.SSLContext | None = None
    timeout_seconds: float = 30.0

    @classmethod
    def from_settings(
        cls, settings: Settings, tls_context: ssl.SSLContext | None = None
    ) -> SmtpConfig:
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            user=settings.smtp_user,
            password=settings.smtp_password,
            sender=settings.smtp_from,
            starttls=settings.smtp_starttls,
            tls_context=tls_context,
        )


@dataclass(frozen=True, slots=True)
class Transport:
    """The clients a sender owns for its lifetime, shared by all its deliveries."""

    http: httpx.AsyncClient
    smtp: SmtpConfig
    # No send may outlive this, whatever a channel's own timeout: past the claim's lease
    # another sender may take the row, and one row must never be sent twice at once.
    deadline_seconds: float
