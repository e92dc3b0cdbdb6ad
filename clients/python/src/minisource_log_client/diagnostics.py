"""The client's own log lines: on the logger `minisource_log_client`, at most one per
kind per interval, and never shipped by MinisourceHandler (it skips this logger)."""

from __future__ import annotations

import logging
import threading
import time

LOGGER_NAME = "minisource_log_client"
log = logging.getLogger(LOGGER_NAME)


class Throttled:
    """One warning per kind per `interval` seconds, with how many were held back."""

    def __init__(self, interval: float = 60.0) -> None:
        self._interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self._interval:
                self._held[kind] = self._held.get(kind, 0) + 1
                return
            self._last[kind] = now
            held = self._held.pop(kind, 0)
        if held:
            message += f" ({held} more like this since the last warning)"
        log.warning(message, *args)
