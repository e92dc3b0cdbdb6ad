"""The generic webhook: the payload as JSON, signed when the channel has a secret."""

from __future__ import annotations

import hashlib
import hmac
import time

import msgspec

from services.evaluator.channels.base import Notification, Transport
from services.evaluator.channels.http import post_json
from shared.alerts import WebhookChannel

SIGNATURE_HEADER = "X-Minisource-Signature"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`. The timestamp is
    signed with the body so a receiver can refuse an old request replayed (Stripe's
    scheme, which receivers' libraries already know)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


async def send(transport: Transport, notification: Notification, channel: WebhookChannel) -> None:
    body = msgspec.json.encode(notification.payload)
    headers = notification.identity_headers()
    if isinstance(channel.secret, str):
        # Signed at each try: a retry hours later still passes a receiver's age check.
        headers[SIGNATURE_HEADER] = signature(channel.secret, int(time.time()), body)
    await post_json(transport, channel.url, body, headers, channel.timeout_seconds)
