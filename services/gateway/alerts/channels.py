"""Channel secrets are write-only: kept on a PUT that omits them, never shown.

A client reads a rule (webhooks show `secret_set`, not the secret), changes it and
writes it back whole: a webhook without `secret` keeps the secret of the stored webhook
with the same url (at the same position first, else the first such one); `"secret":
null` removes it; a new value replaces it. A delivery error is shown with the secret
masked, whatever the sender wrote in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from services.gateway.alerts.models import ChannelOut, WebhookChannelOut
from shared.alerts import Channel, WebhookChannel

_CHANNELS = list[Channel]


def stored_channels(raw: Sequence[Any]) -> list[Channel]:
    """The channels column (jsonb, parsed) as channel structs."""
    return msgspec.convert(list(raw), _CHANNELS)


def to_column(channels: Sequence[Channel]) -> list[Any]:
    """What the channels column holds: each channel as JSON, secrets included (the
    evaluator's outbox copies it; only the database ever sees it)."""
    return [msgspec.to_builtins(c) for c in channels]


def with_kept_secrets(new: Sequence[Channel], old: Sequence[Channel]) -> list[Channel]:
    """`new` as written by a client, each webhook that omits `secret` given the stored
    one of the webhook with its url; on create (`old` empty) an omitted secret is none."""
    kept: list[Channel] = []
    for index, channel in enumerate(new):
        if isinstance(channel, WebhookChannel) and channel.secret is msgspec.UNSET:
            secret = _stored_secret(channel.url, index, old)
            channel = msgspec.structs.replace(channel, secret=secret)
        kept.append(channel)
    return kept


def _stored_secret(url: str, index: int, old: Sequence[Channel]) -> str | None:
    same_place = old[index] if index < len(old) else None
    candidates = [same_place, *old]
    for candidate in candidates:
        if isinstance(candidate, WebhookChannel) and candidate.url == url:
            return candidate.secret if isinstance(candidate.secret, str) else None
    return None


def shown(channel: Channel) -> ChannelOut:
    """A channel as the API shows it: a webhook's secret only as `secret_set`."""
    if isinstance(channel, WebhookChannel):
        return WebhookChannelOut(
            url=channel.url,
            secret_set=isinstance(channel.secret, str),
            timeout_seconds=channel.timeout_seconds,
        )
    return channel


def redact(text: str, channel: Any) -> str:
    """A delivery error as it may be shown: without the channel's secret, whatever the
    sender put in it (`channel` is the outbox's copy of the channel, parsed JSON)."""
    secret = channel.get("secret") if isinstance(channel, dict) else None
    if isinstance(secret, str) and secret:
        text = text.replace(secret, "[secret]")
    return text
