"""A `log()` call made into one encoded entry, with the client's defaults filled in."""

from __future__ import annotations

from typing import Any

from minisource_log_client.config import ClientConfig
from minisource_log_client.entry import build_entry, encode_entry
from minisource_log_client.levels import level_name


def encode_call(
    config: ClientConfig,
    service_name: str | None,
    level: str | int,
    message: str,
    fields: dict[str, Any],
) -> bytes:
    service = service_name or config.service_name
    if not service:
        raise ValueError("service_name is required (give it to log() or to the client)")
    if config.host is not None:
        fields.setdefault("host", config.host)
    if config.environment is not None:
        fields.setdefault("environment", config.environment)
    return encode_entry(build_entry(service, level_name(level), message, fields))
