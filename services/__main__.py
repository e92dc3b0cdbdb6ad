"""`python -m services`: run the whole service on one machine (what `make run` does).

Creates the role and database when absent (where it may), applies migrations, then
starts gateway, WRITER_PROCESSES writers, evaluator and janitor as child processes of
this supervisor, restarts any that dies, and on Ctrl-C / SIGTERM stops them all.
It says "listening" only once the gateway says it serves, and stops everything when the
gateway cannot take its port (a restart would not free it). It starts the services by
module name and imports none of them (their contract with it: shared/supervision.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

from shared.db import bootstrap_database
from shared.lifecycle import sleep_or_stop, stop_on_signals
from shared.migrate import migrate
from shared.settings import Settings, SettingsError
from shared.supervision import EXIT_CANNOT_LISTEN, READY_FD_ENV

_STOP_GRACE_SECONDS = 20.0
# How long the gateway may take to serve before the supervisor says it is still waiting.
_SERVE_WITHIN_SECONDS = 30.0


@dataclass
class Child:
    name: str
    module: str
    env: dict[str, str]
    pass_fds: tuple[int, ...] = ()
    # Exit statuses a restart cannot cure: they stop everything, saying this.
    fatal: dict[int, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None


def _say(text: str) -> None:
    print(f"[minisource] {text}", flush=True)


async def _supervise(child: Child, stop: asyncio.Event, failures: list[int]) -> None:
    """Keep one child running until stop; restart with backoff when it dies, unless its
    exit status is fatal (then it is added to `failures` and everything stops)."""
    delay = 0.5
    while not stop.is_set():
        started = time.monotonic()
        child.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", child.module, env=child.env, pass_fds=child.pass_fds
        )
        if stop.is_set():
            # Stopping began while it was starting: `_stop_all` may not have seen it.
            child.process.send_signal(signal.SIGTERM)
        code = await child.process.wait()
        if stop.is_set():
            return
        if code in child.fatal:
            _say(child.fatal[code])
            failures.append(code)
            stop.set()
            return
        if time.monotonic() - started > 30:
            delay = 0.5
        _say(f"{child.name} exited with code {code}; restarting in {delay:.1f}s")
        await sleep_or_stop(stop, delay)
        delay = min(delay * 2, 30.0)


async def _stop_all(children: list[Child], supervisors: list[asyncio.Task[None]]) -> None:
    """SIGTERM every child, wait for each supervisor to see its child exit (a child that was
    being restarted is signalled by its supervisor), SIGKILL what outlives the grace."""
    for c in children:
        if c.process and c.process.returncode is None:
            c.process.send_signal(signal.SIGTERM)
    _, late = await asyncio.wait(supervisors, timeout=_STOP_GRACE_SECONDS)
    if late:
        for c in children:
            if c.process and c.process.returncode is None:
                _say(f"{c.name} did not stop within {_STOP_GRACE_SECONDS:.0f}s; killing it")
                c.process.kill()
        await asyncio.wait(late)


async def _announce_when_serving(ready: asyncio.StreamReader, settings: Settings) -> None:
    """Say "listening" when the gateway says it serves, never before: the port might be
    another instance's, and a curl answered by it would mislead. Reads until cancelled,
    so that a restarted gateway's line never waits in a full pipe."""
    address = f"http://{settings.server_host}:{settings.server_port}"
    try:
        async with asyncio.timeout(_SERVE_WITHIN_SECONDS):
            await ready.readline()
    except TimeoutError:
        _say(
            f"the gateway does not serve {address} after {_SERVE_WITHIN_SECONDS:.0f}s; still "
            "waiting (its output above says why)"
        )
        await ready.readline()
    _say(
        f"listening on {address} (API under /api/v1, OpenAPI at /schema); "
        f"{settings.writer_processes} writer(s); Ctrl-C stops"
    )
    while await ready.readline():
        _say(f"the gateway serves {address} again")


async def _pipe_reader(fd: int) -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    return reader, transport


async def run(settings: Settings) -> int:
    """Run the children until Ctrl-C / SIGTERM (exit status 0) or a fatal exit of one of
    them (its exit status)."""
    stop = stop_on_signals()
    base = {k: v for k, v in os.environ.items() if k != READY_FD_ENV}
    # The gateway writes a line here each time it starts serving (shared/supervision.py).
    # The supervisor keeps the write end for the gateway's restarts.
    ready_read, ready_write = os.pipe()
    ready, ready_transport = await _pipe_reader(ready_read)
    children = [
        Child(
            "gateway",
            "services.gateway",
            {**base, READY_FD_ENV: str(ready_write)},
            pass_fds=(ready_write,),
            fatal={
                EXIT_CANNOT_LISTEN: (
                    f"the gateway cannot listen on {settings.server_host}:"
                    f"{settings.server_port} (see above); stopping. Free the port or choose "
                    "another with SERVER_PORT"
                )
            },
        )
    ]
    host = socket.gethostname()
    for i in range(settings.writer_processes):
        name = settings.writer_name or f"writer-{host}"
        env = {**base, "WRITER_NAME": f"{name}-{i + 1}"}
        if settings.metrics_port:
            # Writers on one host each need their own metrics port: writer n serves on
            # METRICS_PORT + 3 + (n - 1), past the evaluator's and janitor's (README,
            # "Metrics").
            env["METRICS_PORT"] = str(settings.metrics_port + i)
        children.append(Child(f"writer-{i + 1}", "services.writer", env))
    children.append(Child("evaluator", "services.evaluator", base))
    children.append(Child("janitor", "services.janitor", base))
    failures: list[int] = []
    tasks = [asyncio.create_task(_supervise(c, stop, failures)) for c in children]
    announcer = asyncio.create_task(_announce_when_serving(ready, settings))
    await stop.wait()
    announcer.cancel()
    if not failures:
        _say("stopping")
    await _stop_all(children, tasks)
    ready_transport.close()
    os.close(ready_write)
    _say("stopped")
    return failures[0] if failures else 0


def main() -> None:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        sys.exit(str(exc))
    _say(
        f"PostgreSQL {settings.postgres_user}@{settings.postgres_host}:{settings.postgres_port}"
        f"/{settings.postgres_db}, Redis {settings.redis_host}:{settings.redis_port}"
        f"/{settings.redis_db} (prefix {settings.redis_key_prefix})"
    )
    try:
        bootstrap_database(settings)
        applied = migrate(settings)
    except Exception as exc:
        sys.exit(f"[minisource] cannot prepare the database: {exc}")
    _say(f"schema up to date (applied now: {applied or 'nothing'})")
    # The bootstrap admin key is the gateway's to make and print, once it serves.
    sys.exit(asyncio.run(run(settings)))


if __name__ == "__main__":
    main()
