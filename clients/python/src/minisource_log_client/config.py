"""The options both clients take, with their defaults and checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict

from minisource_log_client.buffer import OVERFLOW_POLICIES, Overflow
from minisource_log_client.retry import RetryPolicy


@dataclass(frozen=True, kw_only=True, slots=True)
class ClientConfig:
    service_name: str | None = None
    """Default service_name of every entry (a `log()` argument overrides it)."""
    host: str | None = None
    environment: str | None = None
    tenant_id: str | None = None
    """Sent as X-Tenant-ID, for a gateway in AUTH_MODE=trusted_header."""
    headers: dict[str, str] | None = None
    max_batch_records: int = 1000
    max_batch_bytes: int = 1024 * 1024
    """Uncompressed JSON per request; the gateway's MAX_BODY_BYTES is 10 MiB."""
    flush_interval: float = 1.0
    """The longest a record waits in the queue before a partial batch is sent."""
    max_queue_records: int = 10_000
    max_queue_bytes: int = 16 * 1024 * 1024
    overflow: Overflow = "drop_new"
    """What a full queue does with a new record: "drop_new" refuses it, "drop_old"
    evicts the oldest queued ones, "block" makes `log()` wait for room (up to
    `block_timeout`, then the record is dropped)."""
    block_timeout: float | None = None
    gzip: bool = True
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float = 10.0
    """Per HTTP request (connect, read, write)."""
    close_timeout: float = 10.0
    """How long `close()` (and the exit flush) may take before what is left is dropped."""
    flush_at_exit: bool = True

    def __post_init__(self) -> None:
        if self.max_batch_records < 1 or self.max_batch_bytes < 1:
            raise ValueError("max_batch_records and max_batch_bytes must be positive")
        if self.flush_interval <= 0:
            raise ValueError("flush_interval must be positive")
        if self.overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {', '.join(OVERFLOW_POLICIES)}")


class ClientOptions(TypedDict, total=False):
    """ClientConfig's fields as keyword arguments of LogClient and AsyncLogClient."""

    service_name: str | None
    host: str | None
    environment: str | None
    tenant_id: str | None
    headers: dict[str, str] | None
    max_batch_records: int
    max_batch_bytes: int
    flush_interval: float
    max_queue_records: int
    max_queue_bytes: int
    overflow: Overflow
    block_timeout: float | None
    gzip: bool
    retry: RetryPolicy
    timeout: float
    close_timeout: float
    flush_at_exit: bool
