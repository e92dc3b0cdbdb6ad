"""`python -m services.gateway`: serve the API with uvicorn on SERVER_HOST:SERVER_PORT.

The port is taken first, before anything is said or made: a port in use ends the process
at once with a line naming it and SERVER_PORT (exit status EXIT_CANNOT_LISTEN, which
`python -m services` does not restart). Then the gateway serves, applies the migrations
(as every process does) and, once it serves, makes the bootstrap admin key on a database
that has none and prints it, once: started alone (compose) it is the one to do so.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
import sys
from types import FrameType

import uvicorn

from services.gateway.admin.tenancy import first_admin_key
from shared.lifecycle import retry_until_ready
from shared.logsetup import settle_heap, start_process
from shared.migrate import migrate_when_reachable
from shared.settings import Settings
from shared.supervision import EXIT_CANNOT_LISTEN, notify_serving

log = logging.getLogger("gateway")


def _listen(settings: Settings) -> socket.socket:
    """The gateway's listening socket; when the address cannot be taken, the process ends
    with one line saying why and what to change."""
    host, port = settings.server_host, settings.server_port
    try:
        return socket.create_server(
            (host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET
        )
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            reason = (
                f"port {port} on {host} is already in use (another instance?); stop what "
                "uses it or set SERVER_PORT to a free port"
            )
        else:
            reason = (
                f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                "check SERVER_HOST and SERVER_PORT"
            )
        print(f"[minisource] gateway: {reason}", file=sys.stderr, flush=True)
        sys.exit(EXIT_CANNOT_LISTEN)


class _Gateway(uvicorn.Server):
    """uvicorn's server, plus what the gateway does around its start: migrations beside
    it, then the announcement and the bootstrap key once it serves."""

    def __init__(self, config: uvicorn.Config, settings: Settings) -> None:
        super().__init__(config)
        self._settings = settings
        self._serving = asyncio.Event()
        self._stop = asyncio.Event()
        self._preparing: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        # Beside the app's startup, not before it: ingest needs only Redis, so the gateway
        # serves while PostgreSQL is still coming up.
        self._preparing = asyncio.create_task(self._prepare_database())
        await super().startup(sockets)
        # Reached only when serving: a failed startup ends the process inside uvicorn.
        settle_heap()  # the app, its pools and caches are built and live as long
        host, port = self._settings.server_host, self._settings.server_port
        log.info("listening on http://%s:%s", host, port)
        notify_serving()
        self._serving.set()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._stop.set()
        if self._preparing is not None:
            # A migration in progress is PostgreSQL's to roll back when the process ends.
            self._preparing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._preparing
        await super().shutdown(sockets)

    async def _prepare_database(self) -> None:
        if await migrate_when_reachable(self._settings, self._stop) is None:
            return
        # Made only once the gateway serves: a key printed by a gateway that then failed
        # to start would be lost (only its digest is kept), and callers would try it on
        # whatever else answers on the port.
        await self._serving.wait()
        key = await retry_until_ready(
            "PostgreSQL (to make the bootstrap admin key)",
            lambda: first_admin_key(self._settings),
            self._stop,
        )
        if key:
            # Printed, not logged: it is for a person to copy, and must show whatever
            # LOG_LEVEL says.
            print(
                "[minisource] bootstrap admin API key, shown this once (only its digest is "
                f"kept): {key}",
                flush=True,
            )


def main() -> None:
    settings = start_process("gateway")
    # Before importing the app (a second or so): a port in use is reported at once.
    sock = _listen(settings)
    # Stopped by a signal, the gateway exits 0 as the other processes do. Uvicorn puts
    # back the handlers it found once it has shut down and raises the signal again; with
    # the default ones the process would end by the signal (SIGTERM: status 143 in Docker).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    from services.gateway.app import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=settings.server_host,
        port=settings.server_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    _Gateway(config, settings).run(sockets=[sock])


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)


if __name__ == "__main__":
    main()
