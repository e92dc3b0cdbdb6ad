"""Receivers of alert notifications for tests: an HTTP server (webhook, Slack,
Alertmanager) and an SMTP server (aiosmtpd), both on 127.0.0.1, recording what arrives
and letting a test await it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.polling import wait_until
from tests.processes import free_port


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    at: float  # time.time() of its arrival


# How the receiver answers its n-th request (0-based); it may wait (a hanging receiver).
Responder = Callable[[int, Request], Awaitable[int]]


async def answer_200(index: int, request: Request) -> int:
    return 200


def answers(*statuses: int) -> Responder:
    """Answer the given statuses in turn, then 200."""

    async def respond(index: int, request: Request) -> int:
        return statuses[index] if index < len(statuses) else 200

    return respond


class HttpReceiver:
    """An ASGI app served by uvicorn on a free port; records every request."""

    def __init__(self, respond: Responder = answer_200) -> None:
        self.respond = respond
        self.requests: list[Request] = []
        self._arrived = asyncio.Event()
        self.url = ""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = Request(
            scope["method"],
            scope["path"],
            {k.decode().lower(): v.decode() for k, v in scope["headers"]},
            body,
            time.time(),
        )
        index = len(self.requests)
        self.requests.append(request)
        self._arrived.set()
        status = await self.respond(index, request)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": f"answered {status}".encode()})

    async def wait_for(self, count: int, within: float = 10.0) -> list[Request]:
        """Until `count` requests have arrived; returns them all."""
        async with asyncio.timeout(within):
            while len(self.requests) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return list(self.requests)

    def by_notification(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.requests:
            key = r.headers["x-minisource-notification-id"]
            counts[key] = counts.get(key, 0) + 1
        return counts


@contextlib.asynccontextmanager
async def http_receiver(respond: Responder = answer_200) -> AsyncIterator[HttpReceiver]:
    app = HttpReceiver(respond)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(
        app, log_level="warning", lifespan="off", access_log=False, timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await wait_until(lambda: server.started, within=10, what="the receiver to listen")
        yield app
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass(frozen=True)
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: Message
    authenticated_as: str | None


class SmtpReceiver:
    """An aiosmtpd handler (it runs in the controller's thread) recording each message."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._arrived = asyncio.Event()
        self.mails: list[Mail] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        login = session.auth_data.login.decode() if session.authenticated else None
        mail = Mail(
            envelope.mail_from,
            list(envelope.rcpt_tos),
            message_from_bytes(envelope.original_content),
            login,
        )
        self._loop.call_soon_threadsafe(self._add, mail)
        return "250 OK"

    def _add(self, mail: Mail) -> None:
        self.mails.append(mail)
        self._arrived.set()

    async def wait_for(self, count: int, within: float = 10.0) -> list[Mail]:
        async with asyncio.timeout(within):
            while len(self.mails) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return list(self.mails)


def _accept(user: str, password: str) -> Callable[..., AuthResult]:
    def authenticator(
        server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data == (
            user.encode(),
            password.encode(),
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    return authenticator


@contextlib.contextmanager
def smtp_receiver(
    *, tls: ssl.SSLContext | None = None, login: tuple[str, str] | None = None
) -> Iterator[tuple[SmtpReceiver, int]]:
    """A local SMTP server; with `tls`, STARTTLS is offered and required; with `login`,
    AUTH is required (after STARTTLS). Yields the receiver and its port."""
    handler = SmtpReceiver(asyncio.get_running_loop())
    port = free_port()
    options: dict[str, Any] = {}
    if tls is not None:
        options |= {"tls_context": tls, "require_starttls": True}
    if login is not None:
        options |= {"authenticator": _accept(*login), "auth_required": True}
    controller = Controller(handler, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made by the openssl command line (.ci/run
    installs it where it is missing)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
