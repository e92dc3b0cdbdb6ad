"""A Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat): one message of
readable text."""

from __future__ import annotations

import msgspec

from services.evaluator.channels import facts
from services.evaluator.channels.base import Notification, Payload, Transport
from services.evaluator.channels.http import post_json
from shared.alerts import SlackChannel

# Slack's incoming webhooks answer within seconds or not at all; the channel has no
# timeout of its own.
TIMEOUT_SECONDS = 10.0


def _escape(text: str) -> str:
    """Slack's three control characters, escaped as its docs ask, so a rule named
    `<b> & co` is shown as typed."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def text(p: Payload) -> str:
    icon = ":rotating_light:" if p.status == "firing" else ":white_check_mark:"
    lines = [
        f"{icon} *{p.status.upper()}* [{_escape(p.alert.severity)}] *{_escape(p.alert.name)}*",
        f"Group: {_escape(facts.group(p))}",
        f"Count: {_escape(facts.count(p))}",
        f"Window: {facts.window(p)}",
    ]
    if p.resolved_at is not None:
        lines.append(f"Resolved at: {facts.timestamp(p.resolved_at)}")
    if p.reason:
        lines.append(f"Reason: {_escape(p.reason)}")
    if p.link:
        lines.append(f"<{p.link}|Matching logs>")
    return "\n".join(lines)


async def send(
    transport: Transport, notification: Notification, channel: SlackChannel, p: Payload
) -> None:
    body = msgspec.json.encode({"text": text(p)})
    await post_json(transport, channel.url, body, notification.identity_headers(), TIMEOUT_SECONDS)
