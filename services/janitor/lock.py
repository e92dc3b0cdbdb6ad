"""The janitor's advisory lock: of all janitors, only the one holding it acts.

Every step that changes shared state (partitions ahead, pruning, the search index,
retention) runs inside `janitor_lock` on the connection that does the work: if that
connection dies, the lock goes with it, and no janitor keeps acting without it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg

LOCK_KEY = 0x6A616E69  # "jani"


@contextlib.contextmanager
def janitor_lock(conn: psycopg.Connection) -> Iterator[bool]:
    """Try the lock on `conn` (autocommit, session level); yields whether it is held,
    and releases it on exit when it was taken. Never waits: another janitor acting is
    not a reason to queue behind it."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
    held = bool(row and row[0])
    try:
        yield held
    finally:
        # A broken connection has already lost the lock with its session.
        if held and not conn.closed and not conn.broken:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
