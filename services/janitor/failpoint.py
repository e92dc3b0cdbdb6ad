"""Test-only failpoints: the janitor SIGKILLs itself at a named step of its work.

The crash tests need the process dead in exact windows (an archive's temp file written
but not renamed; renamed but without its manifest; the manifest durable but nothing
deleted), which timing alone cannot hit. With MINISOURCE_FAILPOINT=<point>, `reached()`
kills the process there: no cleanup, no `finally`, as a power cut or the OOM killer
would. Unset (every deployment), it is one string comparison. The writer's failpoints
(services/writer/failpoint.py) block instead, because its tests kill it themselves.
"""

from __future__ import annotations

import os
import signal

# Read once at import, not through Settings: a test hook, not a setting users should find.
_POINT = os.environ.get("MINISOURCE_FAILPOINT", "")


def reached(point: str) -> None:
    """SIGKILL this process when `point` is the armed failpoint; otherwise return."""
    if point == _POINT:
        os.kill(os.getpid(), signal.SIGKILL)
