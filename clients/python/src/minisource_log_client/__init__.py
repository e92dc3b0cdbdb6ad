"""Minisource Log client: LogClient (threads), AsyncLogClient (asyncio) and
MinisourceHandler (the `logging` handler), with batching, a bounded queue, gzip,
retries and an Idempotency-Key per batch."""

from minisource_log_client.aio import AsyncLogClient
from minisource_log_client.buffer import Overflow
from minisource_log_client.client import LogClient
from minisource_log_client.config import ClientConfig
from minisource_log_client.handler import MinisourceHandler, record_to_entry
from minisource_log_client.levels import LEVELS, level_name, python_level
from minisource_log_client.retry import Action, Decision, RetryPolicy, parse_retry_after
from minisource_log_client.stats import ClientStats

__all__ = [
    "LEVELS",
    "Action",
    "AsyncLogClient",
    "ClientConfig",
    "ClientStats",
    "Decision",
    "LogClient",
    "MinisourceHandler",
    "Overflow",
    "RetryPolicy",
    "level_name",
    "parse_retry_after",
    "python_level",
    "record_to_entry",
]
