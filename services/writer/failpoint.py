"""Test-only failpoints: stop the writer dead at a named step so a test can SIGKILL it there.

The crash tests need the writer killed in two exact windows (holding an uncommitted
batch; committed but not acknowledged), which timing alone cannot hit reliably. With
MINISOURCE_FAILPOINT=before_commit|after_commit and MINISOURCE_FAILPOINT_FILE=<path>,
the writer creates the file on reaching that point and then waits forever. Unset (every
deployment), `reached()` is one string comparison.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

# Read once at import, not through Settings: this is a test hook, not a setting a user
# should ever find in the configuration table.
_POINT = os.environ.get("MINISOURCE_FAILPOINT", "")
_FILE = os.environ.get("MINISOURCE_FAILPOINT_FILE", "")


async def reached(point: str) -> None:
    """Block forever when `point` is the armed failpoint; otherwise return at once."""
    if point != _POINT:
        return
    if _FILE:
        await asyncio.to_thread(Path(_FILE).touch)
    await asyncio.Event().wait()
