"""MinisourceHandler: Python `logging` records as entries of the service, sent by a
LogClient in the background (emit never waits for the network)."""

from __future__ import annotations

import logging
import traceback
from typing import Any, Unpack

from minisource_log_client.client import LogClient, in_sender
from minisource_log_client.config import ClientOptions
from minisource_log_client.diagnostics import LOGGER_NAME
from minisource_log_client.entry import build_entry, encode_entry
from minisource_log_client.levels import python_level

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
# `extra=` keys that are fields of the entry go to the top of it, not into metadata.
_TOP_LEVEL_EXTRAS = frozenset(
    {"trace_id", "span_id", "user_id", "request_id", "host", "environment", "service_name"}
)
_MAX_SOURCE = 512  # the gateway's bound on `source`

try:
    from opentelemetry import trace as _otel_trace
except ImportError:  # opentelemetry-api is optional
    _otel_trace = None  # type: ignore[assignment]


def current_span_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) in hex of the current OpenTelemetry span, if there is one."""
    if _otel_trace is None:
        return None
    context = _otel_trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def record_to_entry(record: logging.LogRecord, service_name: str) -> dict[str, Any]:
    """The entry for one record: level, message, source, logger, exception, extras and
    the current span's ids."""
    metadata: dict[str, Any] = {"logger": record.name}
    fields: dict[str, Any] = {"timestamp": record.created}
    if record.exc_info and record.exc_info[0] is not None:
        metadata["exception_type"] = record.exc_info[0].__name__
        metadata["exception"] = (
            record.exc_text or "".join(traceback.format_exception(*record.exc_info)).rstrip()
        )
    elif record.exc_text:
        metadata["exception"] = record.exc_text
    if record.stack_info:
        metadata["stack"] = record.stack_info
    source = f"{record.pathname}:{record.lineno}"
    if len(source) > _MAX_SOURCE:
        source = "…" + source[-(_MAX_SOURCE - 1) :]  # the file name end is what matters
    fields["source"] = source
    ids = current_span_ids()
    if ids is not None:
        fields["trace_id"], fields["span_id"] = ids
    for key, value in record.__dict__.items():
        if key in _STANDARD_ATTRS or key.startswith("_"):
            continue
        if key in _TOP_LEVEL_EXTRAS:
            if key == "service_name":
                service_name = str(value)
            else:
                fields[key] = value
        else:
            metadata[key] = value
    fields["metadata"] = metadata
    return build_entry(service_name, python_level(record.levelno), record.getMessage(), fields)


class MinisourceHandler(logging.Handler):
    """Ship `logging` records to Minisource Log.

        handler = MinisourceHandler("http://localhost:5002", api_key="mlk_...",
                                    service_name="billing")
        logging.getLogger().addHandler(handler)

    or around a client of your own: `MinisourceHandler(client=LogClient(...))`. Records
    of the client's own logger (`minisource_log_client`) and every record logged by the
    client's sender (httpx's request lines among them) are never shipped: the handler
    would otherwise feed itself.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        client: LogClient | None = None,
        level: int | str = logging.NOTSET,
        **options: Unpack[ClientOptions],
    ) -> None:
        super().__init__(level)
        if client is None:
            if url is None:
                raise ValueError("give the gateway's url (or a client)")
            client = LogClient(url, api_key, **options)
        elif url is not None or options:
            raise ValueError("give either a client or the url and options to make one")
        if not client.config.service_name:
            raise ValueError("the handler needs a service_name (give it to the client)")
        self.client = client
        self._service_name = client.config.service_name
        self._host, self._environment = client.config.host, client.config.environment

    def handle(self, record: logging.LogRecord) -> bool:
        # Checked before Handler.handle takes the handler's lock: under overflow="block"
        # an application thread can hold that lock while it waits for the sender, and the
        # sender's own records (httpx logs every request) must not wait for that lock.
        if in_sender.get() or record.name.partition(".")[0] == LOGGER_NAME:
            return False
        return super().handle(record)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry = record_to_entry(record, self._service_name)
            if self._host is not None:
                entry.setdefault("host", self._host)
            if self._environment is not None:
                entry.setdefault("environment", self._environment)
            self.client.log_encoded(encode_entry(entry))
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.client.flush(self.client.config.close_timeout)

    def close(self) -> None:
        # logging.shutdown (at exit) closes handlers: the queued records go out first.
        try:
            self.client.close()
        finally:
            super().close()
