"""Prometheus Alertmanager: the alert POSTed to `<url>/api/v2/alerts`, so teams keep
their routing, silences and inhibitions.

Alertmanager expects a firing alert to be re-sent while it lasts and resolves one it has
not heard of for `resolve_timeout` (5 min by default) when it has no `endsAt`. We send
once per state change, so a firing alert carries an `endsAt` far in the future and the
`resolved` notification ends it (its `endsAt` is the resolution time); the outbox sends
one group's notifications to one channel in order (services/evaluator/outbox.py). Alertmanager
identifies an alert by its labels: firing and resolved carry the same ones, and a
repeated delivery only refreshes the same alert.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from services.evaluator.channels import facts
from services.evaluator.channels.base import Notification, Payload, Transport
from services.evaluator.channels.http import post_json
from shared.alerts import AlertmanagerChannel

TIMEOUT_SECONDS = 10.0
# A firing alert's endsAt, counted from the send: long enough that Alertmanager never
# ends it by itself; the resolved notification ends it. (Should that one fail
# ALERT_MAX_ATTEMPTS times, the alert stays active there until silenced or past this
# horizon: the failure is shown in the events API.)
FIRING_HORIZON = timedelta(days=365)


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def alerts(p: Payload) -> list[dict[str, Any]]:
    """The request body: a list of one alert."""
    labels = {
        "alertname": p.alert.name,
        "tenant": p.tenant_id,
        "rule": p.alert.id,
        "severity": p.alert.severity,
    }
    # An empty label is no label to Alertmanager: a group value that is absent is left out.
    labels |= {name: value for name, value in p.group.items() if value}
    ends_at = (
        p.resolved_at
        if p.resolved_at is not None
        else datetime.now(UTC).replace(microsecond=0) + FIRING_HORIZON
    )
    return [
        {
            "labels": labels,
            "annotations": {
                "summary": facts.title(p),
                "description": "\n".join(f"{k}: {v}" for k, v in facts.lines(p)),
                "observed_count": str(p.observed_count),
                "link": p.link,
            },
            "startsAt": _rfc3339(p.started_at),
            "endsAt": _rfc3339(ends_at),
            "generatorURL": p.link,
        }
    ]


async def send(
    transport: Transport, notification: Notification, channel: AlertmanagerChannel, p: Payload
) -> None:
    url = channel.url.rstrip("/") + "/api/v2/alerts"
    body = msgspec.json.encode(alerts(p))
    await post_json(transport, url, body, notification.identity_headers(), TIMEOUT_SECONDS)
