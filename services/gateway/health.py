"""/health, /ready and /live: what orchestrators and operators poll."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Request, Response, get
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

_CHECK_TIMEOUT = 2.0


class Health(msgspec.Struct):
    status: str
    postgres: str
    redis: str


async def _postgres_ok(pool: AsyncConnectionPool) -> bool:
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT), pool.connection() as conn:
            await conn.execute("SELECT 1")
        return True
    except Exception:
        return False


async def _redis_ok(redis: Redis) -> bool:
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT):
            return bool(await redis.ping())
    except Exception:
        return False


async def check(request: Request[Any, Any, Any]) -> Health:
    state = request.app.state
    pg, rd = await asyncio.gather(_postgres_ok(state.pool), _redis_ok(state.redis))
    status = "ok" if pg and rd and not state.get("draining") else "unavailable"
    return Health(status=status, postgres="ok" if pg else "down", redis="ok" if rd else "down")


@get("/health", summary="Health of the gateway and its dependencies", tags=["health"])
async def health(request: Request[Any, Any, Any]) -> Health:
    """Always 200 while the process serves; the body tells each dependency's state."""
    return await check(request)


@get("/ready", summary="Readiness: 503 unless PostgreSQL and Redis answer", tags=["health"])
async def ready(request: Request[Any, Any, Any]) -> Response[Health]:
    result = await check(request)
    return Response(result, status_code=200 if result.status == "ok" else 503)


@get("/live", summary="Liveness: 200 while the event loop runs", tags=["health"])
async def live() -> dict[str, str]:
    return {"status": "ok"}
