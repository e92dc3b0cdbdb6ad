"""Readiness while a gateway stops: on SIGTERM /ready answers 503 at once, the gateway
keeps serving for SHUTDOWN_DRAIN_SECONDS (a load balancer's time to notice), then stops
accepting, finishes what is in flight and exits 0."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from dataclasses import replace

import httpx

from tests.conftest import tenant_headers
from tests.polling import wait_until
from tests.processes import Service, free_port, service_env

ENTRY = {"service_name": "drain", "level": "INFO", "message": "in flight at SIGTERM"}
DRAIN_SECONDS = 3.0


async def _status(http: httpx.AsyncClient, gateway: Service, path: str) -> int | None:
    """The status of GET `path`, None when nothing accepts the connection (or, as the
    drain ends, the kept-alive connection the client reused is closed under it)."""
    assert gateway.running(), gateway.output()[-3000:]
    try:
        return (await http.get(path)).status_code
    except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
        return None


async def test_sigterm_fails_ready_at_once_and_the_gateway_drains_then_exits_0(
    settings, tmp_path
) -> None:
    port = free_port()
    config = replace(settings, server_port=port, shutdown_drain_seconds=DRAIN_SECONDS)
    with Service("services.gateway", service_env(config), tmp_path) as gateway:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:

            async def answers(path: str, expected: int | None) -> bool:
                return await _status(http, gateway, path) == expected

            await wait_until(lambda: answers("/ready", 200), within=60, what="ready")
            # A slow request: its headers and part of its body are in, the rest is not.
            body = json.dumps(ENTRY).encode()
            head = "".join(f"{k}: {v}\r\n" for k, v in tenant_headers().items())
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"POST /api/v1/logs HTTP/1.1\r\nHost: t\r\n{head}"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body[:10]
            )
            await writer.drain()

            signalled = time.monotonic()
            gateway.signal(signal.SIGTERM)
            await wait_until(lambda: answers("/ready", 503), within=2, what="/ready 503")
            ready = await http.get("/ready")
            assert ready.json() == {"status": "unavailable", "postgres": "ok", "redis": "ok"}
            assert await answers("/live", 200)
            # What a load balancer still sends while it notices is served.
            late = await http.post("/api/v1/logs", json=ENTRY, headers=tenant_headers())
            assert late.status_code == 202, late.text

            async def stopped_accepting() -> bool:
                status = await _status(http, gateway, "/ready")
                assert status in (503, None), status  # never ready again
                return status is None

            # The drain ends: no new connection; the request in flight still completes.
            await wait_until(stopped_accepting, within=15, what="the gateway to stop accepting")
            assert time.monotonic() - signalled >= DRAIN_SECONDS
            writer.write(body[10:])
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), timeout=10)
            writer.close()
            assert status_line.split()[1] == b"202", status_line
        assert gateway.wait(30) == 0, gateway.output()[-3000:]
