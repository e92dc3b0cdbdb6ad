"""The gateway's wiring: settings in, Litestar app out. No logic lives here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin

from services.gateway import auth, health, limits, openapi_errors, query, stream
from services.gateway.admin import AdminController
from services.gateway.ingest import IngestController
from services.gateway.problems import (
    http_exception_handler,
    internal_error_handler,
    recursion_error_handler,
    service_error_handler,
)
from services.gateway.query import QueryController
from services.gateway.stats import StatsController
from shared.cache import QueryCache
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
        # The query cache has its own Redis client with short timeouts (shared/cache.py).
        query_cache = QueryCache.from_settings(settings)
        app.state.update(
            pool=pool, redis=redis, enqueuer=Enqueuer(redis, settings), query_cache=query_cache
        )
        try:
            yield
        finally:
            await query_cache.aclose()
            await redis.aclose()
            await pool.close()

    return Litestar(
        route_handlers=[
            IngestController,
            AdminController,
            QueryController,
            # After IngestController: it shares the path /api/v1/logs (see query.py).
            query.list_logs,
            StatsController,
            stream.StreamController,
            health.health,
            health.ready,
            health.live,
        ],
        # auth and limits read the pool and Redis opened by `resources`: they come after.
        lifespan=[resources, auth.lifespan, limits.lifespan, query.lifespan, stream.lifespan],
        middleware=[limits.QueryConcurrencyMiddleware()],
        guards=[auth.scope_guard],
        state=State({"settings": settings}),
        exception_handlers={
            ServiceError: service_error_handler,
            HTTPException: http_exception_handler,
            RecursionError: recursion_error_handler,
            Exception: internal_error_handler,
        },
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Minisource Log",
            version="0.1.0",
            path="/schema",
            render_plugins=[SwaggerRenderPlugin()],
            components=auth.OPENAPI_COMPONENTS,
        ),
        # Errors are problem JSON: the document says so for every operation.
        on_startup=[openapi_errors.document_problems],
        debug=False,
        # Our processes log JSON lines through the root logger (shared/logsetup.py).
        logging_config=None,
    )
