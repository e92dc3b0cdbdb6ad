"""`python -m services`: run the whole service on one machine (what `make run` does).

Creates the role and database when absent (where it may), applies migrations, then
starts gateway, WRITER_PROCESSES writers, evaluator and janitor as child processes of
this supervisor, restarts any that dies, and on Ctrl-C / SIGTERM stops them all.
It starts the services by module name and imports none of them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass

from shared.db import bootstrap_database
from shared.lifecycle import sleep_or_stop, stop_on_signals
from shared.migrate import migrate
from shared.settings import Settings, SettingsError
from shared.tenancy import first_admin_key

_STOP_GRACE_SECONDS = 20.0


@dataclass
class Child:
    name: str
    module: str
    env: dict[str, str]
    process: asyncio.subprocess.Process | None = None


def _say(text: str) -> None:
    print(f"[minisource] {text}", flush=True)


async def _supervise(child: Child, stop: asyncio.Event) -> None:
    """Keep one child running until stop; restart with backoff when it dies."""
    delay = 0.5
    while not stop.is_set():
        started = time.monotonic()
        child.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", child.module, env=child.env
        )
        if stop.is_set():
            # Stopping began while it was starting: `_stop_all` may not have seen it.
            child.process.send_signal(signal.SIGTERM)
        code = await child.process.wait()
        if stop.is_set():
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


async def run(settings: Settings) -> None:
    stop = stop_on_signals()
    base = dict(os.environ)
    children = [Child("gateway", "services.gateway", base)]
    host = socket.gethostname()
    for i in range(settings.writer_processes):
        name = settings.writer_name or f"writer-{host}"
        env = {**base, "WRITER_NAME": f"{name}-{i + 1}"}
        children.append(Child(f"writer-{i + 1}", "services.writer", env))
    children.append(Child("evaluator", "services.evaluator", base))
    children.append(Child("janitor", "services.janitor", base))
    tasks = [asyncio.create_task(_supervise(c, stop)) for c in children]
    _say(
        f"listening on http://{settings.server_host}:{settings.server_port} "
        f"(API under /api/v1, OpenAPI at /schema); {settings.writer_processes} writer(s); "
        "Ctrl-C stops"
    )
    await stop.wait()
    _say("stopping")
    await _stop_all(children, tasks)
    _say("stopped")


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
        admin_key = asyncio.run(first_admin_key(settings))
    except Exception as exc:
        sys.exit(f"[minisource] cannot prepare the database: {exc}")
    _say(f"schema up to date (applied now: {applied or 'nothing'})")
    if admin_key:
        _say(f"bootstrap admin API key, shown this once (only its digest is kept): {admin_key}")
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
