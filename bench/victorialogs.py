"""VictoriaLogs beside us in the benchmarks, on the same rows (issue 21's comparison mode).

Only when `VICTORIALOGS_BIN` names a VictoriaLogs binary (README "Benchmarks" has the
build recipe); never needed by tests. The binary runs on a free 127.0.0.1 port with its
data under `~/.cache/minisource-bench/` (one directory per benchmark database and load,
so a second run reuses it, as bench/load.py reuses the database), and is stopped after.

The rows are our benchmark database's own, read back in time order and sent as JSON
lines to `/insert/jsonline`, with the tenant and service as stream fields: the same
ids, times, levels, messages and metadata. Each question of bench/query.py is asked in
LogsQL as the nearest equivalent (`queries`); a word search is VictoriaLogs' word filter
`i("word")`, where ours is a case-insensitive substring match, so the counting shape
prints both counts for the reader to compare. bench/ingest.py sends it the same batches
(`ingest_rate`), as JSON lines, from as many concurrent clients as it uses for us.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import msgspec
import psycopg

from shared.model import Level

CACHE = Path.home() / ".cache" / "minisource-bench"
_LOADED_MARK = "minisource-loaded"
_LEVELS = {int(level): level.name for level in Level}
_CHUNK_ROWS = 20_000

_ROWS_SQL = """
SELECT "timestamp", tenant_id, service_name, level, message, trace_id, span_id, user_id,
       request_id, metadata, source, host, environment, id
FROM log_entries ORDER BY "timestamp"
"""
_FIELDS = (
    "_time", "tenant_id", "service_name", "level", "message", "trace_id", "span_id",
    "user_id", "request_id", "metadata", "source", "host", "environment", "id",
)  # fmt: skip


def binary() -> str | None:
    """The VictoriaLogs binary to compare with, if one is configured and present."""
    path = os.environ.get("VICTORIALOGS_BIN", "")
    return path if path and Path(path).is_file() else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class VictoriaLogs:
    process: subprocess.Popen[bytes]
    base: str
    data: Path

    def query(self, logsql: str, client: httpx.Client) -> list[dict[str, object]]:
        """The query's result rows (JSON lines)."""
        response = client.post(f"{self.base}/select/logsql/query", data={"query": logsql})
        response.raise_for_status()
        return [msgspec.json.decode(line) for line in response.content.splitlines() if line]


@contextlib.contextmanager
def running(path: str, key: str) -> Iterator[VictoriaLogs]:
    """VictoriaLogs from `path` with its data directory named after `key`, until exit."""
    data = CACHE / f"victorialogs-{key}"
    data.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log = (CACHE / f"victorialogs-{key}.log").open("ab")
    process = subprocess.Popen(
        [path, f"-storageDataPath={data}", f"-httpListenAddr=127.0.0.1:{port}",
         "-retentionPeriod=100y", "-loggerLevel=WARN"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    server = VictoriaLogs(process, f"http://127.0.0.1:{port}", data)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"VictoriaLogs exited; see {log.name}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.base}/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"VictoriaLogs not ready within 60 s; see {log.name}")
            time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        log.close()


def _lines(rows: list[tuple[object, ...]]) -> bytes:
    out = bytearray()
    for row in rows:
        record = dict(zip(_FIELDS, row, strict=True))
        record["_time"] = row[0].isoformat()  # type: ignore[attr-defined]
        record["level"] = _LEVELS[row[3]]  # type: ignore[index]
        out += msgspec.json.encode({k: v for k, v in record.items() if v is not None})
        out += b"\n"
    return bytes(out)


def load_same_rows(server: VictoriaLogs, conninfo: str) -> tuple[int, float]:
    """Copy every row of our benchmark database into VictoriaLogs, once per data
    directory; returns (rows, seconds), (0, 0) when it was already loaded."""
    mark = server.data / _LOADED_MARK
    if mark.exists():
        return 0, 0.0
    started = time.monotonic()
    rows = 0
    params = {
        "_msg_field": "message",
        "_time_field": "_time",
        "_stream_fields": "tenant_id,service_name",
    }
    headers = {"Content-Type": "application/stream+json"}
    with (
        psycopg.connect(conninfo) as conn,
        conn.cursor(name="victorialogs_export") as cur,
        httpx.Client(timeout=300) as client,
    ):
        cur.itersize = _CHUNK_ROWS
        cur.execute(_ROWS_SQL)
        while chunk := cur.fetchmany(_CHUNK_ROWS):
            response = client.post(
                f"{server.base}/insert/jsonline", params=params, content=_lines(chunk),
                headers=headers,
            )  # fmt: skip
            response.raise_for_status()
            rows += len(chunk)
        client.get(f"{server.base}/internal/force_flush").raise_for_status()
    mark.write_text(f"{rows}\n")
    return rows, time.monotonic() - started


def _range(start: datetime, end: datetime) -> str:
    """LogsQL's half-open time range, [start, end), as our API's is."""
    return f"_time:[{start.isoformat()}, {end.isoformat()})"


def _tenant(tenant: uuid.UUID, service: str | None = None) -> str:
    fields = [f'tenant_id="{tenant}"'] + ([f'service_name="{service}"'] if service else [])
    return "{" + ",".join(fields) + "}"


def _word(term: str) -> str:
    return "i(" + msgspec.json.encode(term.strip('"')).decode() + ")"


@dataclass(frozen=True, slots=True)
class Question:
    """One shape's parameters, as bench/query.py draws them."""

    tenant: uuid.UUID
    service: str
    start: datetime
    end: datetime
    trace_id: str = ""
    request_id: str = ""
    term: str = ""


def queries() -> dict[str, Callable[[Question], str]]:
    """LogsQL for each shape name of bench/query.py (the names must match)."""

    def latest(q: Question) -> str:
        return f"{_tenant(q.tenant)} {_range(q.start, q.end)} | sort by (_time desc) limit 100"

    def service_warn(q: Question) -> str:
        return (
            f"{_tenant(q.tenant, q.service)} {_range(q.start, q.end)} "
            "level:in(WARN, ERROR, FATAL) | sort by (_time desc) limit 100"
        )

    def trace(q: Question) -> str:
        return f'{_tenant(q.tenant)} trace_id:="{q.trace_id}" | sort by (_time) limit 1000'

    def request(q: Question) -> str:
        return f'{_tenant(q.tenant)} request_id:="{q.request_id}" | sort by (_time) limit 1000'

    def search(q: Question) -> str:
        return (
            f"{_tenant(q.tenant)} {_range(q.start, q.end)} {_word(q.term)} "
            "| sort by (_time desc) limit 100"
        )

    def count(q: Question) -> str:
        return f"{_tenant(q.tenant)} {_range(q.start, q.end)} {_word(q.term)} | stats count() n"

    def histogram(q: Question) -> str:
        return (
            f"{_tenant(q.tenant)} {_range(q.start, q.end)} | stats by (_time:1m, level) count() n"
        )

    def word_histogram(q: Question) -> str:
        return (
            f"{_tenant(q.tenant)} {_range(q.start, q.end)} {_word(q.term)} "
            "| stats by (_time:1h, level) count() n"
        )

    def word_quarters(q: Question) -> str:
        return (
            f"{_tenant(q.tenant)} {_range(q.start, q.end)} {_word(q.term)} "
            "| stats by (_time:15m, level) count() n"
        )

    def stats(q: Question) -> str:
        return (
            f"{_tenant(q.tenant)} {_range(q.start, q.end)} "
            "| stats by (service_name, level) count() n, min(_time) first, max(_time) last"
        )

    return {
        "latest 100 of a tenant (24 h)": latest,
        "latest 100 of a tenant (7 d)": latest,
        "service + min_level WARN, 1 h": service_warn,
        "trace lookup": trace,
        "request lookup": request,
        "word search, 24 h": search,
        "word search, 7 d": search,
        "phrase search, 24 h": search,
        "word count, 7 days": count,
        "1-minute aggregate, 24 h": histogram,
        "hourly word histogram, 7 days": word_histogram,
        "15-minute word histogram, 24 h": word_quarters,
        "stats, 7 days": stats,
    }


def _jsonlines(tenant: uuid.UUID, body: bytes) -> list[bytes]:
    """A batch body of bench/ingest.py as VictoriaLogs JSON lines, one per entry."""
    entries = msgspec.json.decode(body)["entries"]
    return [msgspec.json.encode({**entry, "tenant_id": str(tenant)}) for entry in entries]


async def ingest_rate(
    path: str, bodies: list[tuple[uuid.UUID, bytes]], batch: int, clients: int
) -> float:
    """Rows per second a fresh VictoriaLogs takes the same entries at, in requests of
    `batch` lines from `clients` concurrent senders, until they are flushed (searchable)."""
    lines = [line for tenant, body in bodies for line in _jsonlines(tenant, body)]
    requests = [b"\n".join(lines[i : i + batch]) + b"\n" for i in range(0, len(lines), batch)]
    params = {
        "_msg_field": "message",
        "_time_field": "timestamp",
        "_stream_fields": "tenant_id,service_name",
    }
    headers = {"Content-Type": "application/stream+json"}
    key = f"ingest-{os.getpid()}-{batch}"
    with running(path, key) as server:
        try:
            queue = iter(requests)
            async with httpx.AsyncClient(timeout=120) as http:

                async def sender() -> None:
                    for content in queue:
                        response = await http.post(
                            f"{server.base}/insert/jsonline", params=params, content=content,
                            headers=headers,
                        )  # fmt: skip
                        response.raise_for_status()

                started = time.perf_counter()
                await asyncio.gather(*(sender() for _ in range(clients)))
                (await http.get(f"{server.base}/internal/force_flush")).raise_for_status()
                return len(lines) / (time.perf_counter() - started)
        finally:
            shutil.rmtree(server.data, ignore_errors=True)
