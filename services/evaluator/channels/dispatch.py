"""From a claimed row to the channel that delivers it."""

from __future__ import annotations

import msgspec

from services.evaluator.channels import alertmanager, email, slack, webhook
from services.evaluator.channels.base import DeliveryError, Notification, Payload, Transport
from shared.alerts import AlertmanagerChannel, Channel, EmailChannel, SlackChannel, WebhookChannel


async def send(transport: Transport, notification: Notification) -> str | None:
    """Deliver `notification` through its channel, or raise DeliveryError. Returns a
    remark to record with a delivery that was only partly accepted (e-mail)."""
    try:
        channel = msgspec.convert(notification.channel, Channel)
        payload = msgspec.convert(notification.payload, Payload)
    except msgspec.ValidationError as exc:
        # The row was written by a version that spoke differently: no try can help.
        raise DeliveryError(f"the stored notification is not valid: {exc}", permanent=True) from exc
    match channel:
        case WebhookChannel():
            await webhook.send(transport, notification, channel)
        case SlackChannel():
            await slack.send(transport, notification, channel, payload)
        case EmailChannel():
            return await email.send(transport, notification, channel, payload)
        case AlertmanagerChannel():
            await alertmanager.send(transport, notification, channel, payload)
    return None


def channel_type(notification: Notification) -> str:
    """The channel's `type`, for logs (its URL is not logged: it may be a credential)."""
    value = notification.channel.get("type")
    return value if isinstance(value, str) else "unknown"
