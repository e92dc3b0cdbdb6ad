"""The gateway's wiring: settings in, Litestar app out. No logic lives here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin

from services.gateway import health
from services.gateway.ingest import IngestController
from services.gateway.problems import (
    http_exception_handler,
    internal_error_handler,
    service_error_handler,
)
from shared.db import make_pool
from shared.errors import ServiceError
from shared.redis_conn import make_redis
from shared.settings import Settings
from shared.streams import Enqueuer


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def resources(app: Litestar) -> AsyncIterator[None]:
        pool = make_pool(settings, name="gateway")
        # wait=False: ingest needs only Redis, so the gateway starts (and accepts) while
        # PostgreSQL is still coming up; queries wait for a connection.
        await pool.open(wait=False)
        redis = make_redis(settings)
        app.state.update(pool=pool, redis=redis, enqueuer=Enqueuer(redis, settings))
        try:
            yield
        finally:
            await redis.aclose()
            await pool.close()

    return Litestar(
        route_handlers=[IngestController, health.health, health.ready, health.live],
        lifespan=[resources],
        state=State({"settings": settings}),
        exception_handlers={
            ServiceError: service_error_handler,
            HTTPException: http_exception_handler,
            Exception: internal_error_handler,
        },
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Minisource Log",
            version="0.1.0",
            path="/schema",
            render_plugins=[SwaggerRenderPlugin()],
        ),
        debug=False,
    )
