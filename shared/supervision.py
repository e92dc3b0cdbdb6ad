"""What `python -m services` (the supervisor) and the gateway it starts agree on: how the
gateway says that it serves, and the exit status that says a restart cannot help.

The supervisor imports no service, so the contract lives here: the gateway writes one
line on the pipe named by READY_FD_ENV once it accepts connections (the supervisor says
"listening" only then), and exits with EXIT_CANNOT_LISTEN when its address cannot be
taken (the supervisor then stops everything instead of restarting it forever).
"""

from __future__ import annotations

import contextlib
import os
import stat

READY_FD_ENV = "MINISOURCE_READY_FD"

# Not 1 (a setting refused at start) nor 3 (uvicorn's failed startup): 98 is EADDRINUSE's
# number on Linux, the usual cause.
EXIT_CANNOT_LISTEN = 98


def notify_serving() -> None:
    """Tell the supervisor that started this process that it now serves (a restarted
    gateway tells it again); nothing when started alone (compose, a shell)."""
    text = os.environ.get(READY_FD_ENV)
    if text is None:
        return
    # A supervisor gone, a stale variable or a full pipe is no reason to stop serving; a
    # descriptor that is not a pipe is not the supervisor's and is left alone.
    with contextlib.suppress(OSError, ValueError):
        fd = int(text)
        if stat.S_ISFIFO(os.fstat(fd).st_mode):
            os.set_blocking(fd, False)
            os.write(fd, b"serving\n")
