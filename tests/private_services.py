"""Private PostgreSQL and Redis instances that a test may stop and start at will.

The machine's shared PostgreSQL and Redis are never stopped: outage tests run their own
throwaway instance on a free port, in a temporary directory removed afterwards.
PostgreSQL refuses to run as root, so its cluster is owned by and run as `postgres`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
from psycopg import sql
from redis import Redis
from redis.exceptions import RedisError

from tests.processes import free_port

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
_AS_POSTGRES = ["runuser", "-u", "postgres", "--"]


def _wait(ready: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {timeout}s")


class PrivatePostgres:
    """A PostgreSQL cluster of its own (trust auth, user `postgres`) on 127.0.0.1:port."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mlog-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        shutil.chown(self.root, "postgres", "postgres")
        subprocess.run(
            [*_AS_POSTGRES, PG_BIN / "initdb", "-D", self.data, "-U", "postgres",
             "-A", "trust", "-E", "UTF8", "--no-sync", "--no-instructions"],
            check=True, capture_output=True,
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c shared_buffers=32MB -c max_connections=40"
        )
        subprocess.run(
            [*_AS_POSTGRES, PG_BIN / "pg_ctl", "-D", self.data, "-l", self.root / "log",
             "-o", options, "-w", "-t", "60", "start"],
            check=True, capture_output=True,
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            [*_AS_POSTGRES, PG_BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop"],
            check=True, capture_output=True,
        )  # fmt: skip

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def create_database(self, name: str) -> None:
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis:
    """A redis-server of its own on 127.0.0.1:port, persisting every write (AOF, fsync
    always) so that a restart keeps what was accepted, as production Redis must."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mlog-redis-"))
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "always",
             "--save", "", "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait(self._answers, f"redis-server on port {self.port}")

    def _answers(self) -> bool:
        try:
            with contextlib.closing(Redis(port=self.port, socket_timeout=1)) as client:
                return bool(client.ping())
        except RedisError:
            return False

    def kill(self) -> None:
        """Die at once, as in a crash (the AOF already holds every acknowledged write)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.remove()


@contextlib.contextmanager
def private_redis() -> Iterator[PrivateRedis]:
    redis = PrivateRedis()
    try:
        redis.start()
        yield redis
    finally:
        redis.remove()
