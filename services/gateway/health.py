"""/health, /ready and /live: what orchestrators and operators poll."""

from __future__ import annotations

import asyncio

import msgspec
from litestar import Response, get
from litestar.di import NamedDependency
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from services.gateway.state import GatewayState

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


async def check(gateway: GatewayState) -> Health:
    """Each dependency's state; "unavailable" also while draining (after SIGTERM)."""
    pg, rd = await asyncio.gather(_postgres_ok(gateway.pool), _redis_ok(gateway.redis))
    status = "ok" if pg and rd and not gateway.draining.on else "unavailable"
    return Health(status=status, postgres="ok" if pg else "down", redis="ok" if rd else "down")


@get("/health", summary="Health of the gateway and its dependencies", tags=["health"])
async def health(gateway: NamedDependency[GatewayState]) -> Health:
    """Always 200 while the process serves; the body tells each dependency's state."""
    return await check(gateway)


@get("/ready", summary="Readiness: 503 unless PostgreSQL and Redis answer", tags=["health"])
async def ready(gateway: NamedDependency[GatewayState]) -> Response[Health]:
    result = await check(gateway)
    return Response(result, status_code=200 if result.status == "ok" else 503)


@get("/live", summary="Liveness: 200 while the event loop runs", tags=["health"])
async def live() -> dict[str, str]:
    return {"status": "ok"}
