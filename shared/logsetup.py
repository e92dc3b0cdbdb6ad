"""The processes' own logs: one JSON object per line on stdout.

A record may carry structured fields as `extra={"fields": {...}}`: they become keys of
its line beside the message (the gateway's access log does), never replacing the five
every line has. A line logged inside a recorded span (tracing on, shared/tracing.py) also
has `trace_id` and `span_id`, as the trace shows them.
"""

from __future__ import annotations

import gc
import logging
import sys
from datetime import UTC, datetime

import msgspec

from shared.settings import Settings, SettingsError
from shared.tracing import configure_tracing, log_ids

FIELDS = "fields"


class JsonFormatter(logging.Formatter):
    def __init__(self, process: str) -> None:
        super().__init__()
        self._process = process

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "process": self._process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        ids = log_ids()
        if ids is not None:
            entry["trace_id"], entry["span_id"] = ids
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry).decode()


def configure_logging(settings: Settings, process: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(process))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())


def start_process(process: str) -> Settings:
    """How every process starts: its settings from the environment (an invalid one ends
    the process with the message naming the variable), then its JSON logging, then
    tracing when the OTEL_* variables ask for it (before any connection is opened)."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        sys.exit(str(exc))
    configure_logging(settings, process)
    configure_tracing(process)
    settle_heap()
    return settings


def settle_heap() -> None:
    """Move every object alive now (modules, the app, pools) out of the collector's reach:
    they live as long as the process. Each full collection would otherwise walk all of
    them again: that walk cost the gateway ~2 µs per ingested row, and tracing's exporter
    and instrumentations, once imported, as much again (README, "Tracing"). Garbage is
    collected first, so that none of it is kept. Called at start, and by the gateway
    again once it serves.

    Then the youngest generation is collected every 20,000 new container objects rather
    than every 700: an ingest request makes several per entry (dicts, tuples, structs),
    nearly all freed by reference counting when it ends, and collecting them 700 at a
    time cost 0.5 (native JSON) to 2 µs (OTLP protobuf) per row, decode to stream
    message, in process (README, "Ingest protocols"). What a cycle holds waits a little
    longer to be freed: at most some MB."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)


GC_YOUNG_THRESHOLD = 20_000
