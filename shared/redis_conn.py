"""Redis clients, made the same way everywhere (redis-py pitfalls pinned down here)."""

from __future__ import annotations

from redis.asyncio import Redis

from shared.settings import Settings


def make_redis(settings: Settings, *, blocking: bool = False, timeout: float = 5.0) -> Redis:
    """A client for commands (`timeout` seconds to connect and per reply) or, with
    `blocking`, for XREADGROUP BLOCK and pub/sub, which must not be cut by a socket
    timeout. RESP2 is pinned so the reply shapes we parse do not change with the
    library's default."""
    return Redis(
        host=settings.redis_host,
        port=settings.redis_port,
        db=settings.redis_db,
        password=settings.redis_password or None,
        protocol=2,
        socket_timeout=None if blocking else timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        retry_on_timeout=False,
    )
