"""The gateway's wiring: settings in, Litestar app out. No logic lives here."""

from __future__ import annotations

import psycopg
from litestar import Litestar
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig

from services.gateway import auth, docs, health, openapi, scrape
from services.gateway.access_log import AccessLog
from services.gateway.admin.routes import AdminController
from services.gateway.alerts.routes import AlertsController
from services.gateway.content_type import json_body_guard
from services.gateway.dependencies import resolve_dependencies_in_turn
from services.gateway.http_metrics import HttpMetrics
from services.gateway.ingest.routes import IngestController
from services.gateway.loki.query_routes import loki_read_router
from services.gateway.loki.routes import loki_router
from services.gateway.ndjson.routes import ingest_ndjson
from services.gateway.otlp.routes import export_logs
from services.gateway.problems import (
    database_unavailable_handler,
    http_exception_handler,
    internal_error_handler,
    recursion_error_handler,
    service_error_handler,
)
from services.gateway.query.concurrency import QueryConcurrencyMiddleware
from services.gateway.query.routes import QueryController, list_logs
from services.gateway.retention.routes import RetentionController
from services.gateway.state import lifespan, provide_state
from services.gateway.stats.routes import StatsController
from services.gateway.tail.routes import StreamController
from services.gateway.tracing import RequestSpans
from services.gateway.ui.routes import root as ui_root
from services.gateway.ui.routes import ui_router
from shared import tracing
from shared.errors import ServiceError
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings.from_env()
    resolve_dependencies_in_turn()
    app = Litestar(
        route_handlers=[
            IngestController,
            ingest_ndjson,
            loki_router(),
            loki_read_router(),
            export_logs,
            AdminController,
            QueryController,
            # After IngestController: it shares the path /api/v1/logs (see query/routes.py).
            list_logs,
            StatsController,
            StreamController,
            AlertsController,
            RetentionController,
            health.health,
            health.ready,
            health.live,
            scrape.metrics,
            # The web explorer at /ui/, and / redirecting there (services/gateway/ui/).
            ui_router(),
            ui_root,
        ],
        lifespan=[lifespan(settings)],
        dependencies={"gateway": Provide(provide_state, sync_to_thread=False)},
        middleware=[QueryConcurrencyMiddleware()],
        # Authentication first: a caller without the scope learns nothing from the body.
        guards=[auth.scope_guard, json_body_guard],
        exception_handlers={
            ServiceError: service_error_handler,
            HTTPException: http_exception_handler,
            RecursionError: recursion_error_handler,
            psycopg.OperationalError: database_unavailable_handler,
            Exception: internal_error_handler,
        },
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Minisource Log",
            version="0.1.0",
            path=docs.SCHEMA_PATH,
            openapi_router=docs.docs_router(),
            render_plugins=[docs.swagger_page()],
            components=auth.OPENAPI_COMPONENTS,
        ),
        # Errors are problem JSON: the document says so for every operation.
        on_startup=[openapi.document_problems],
        debug=False,
        # Our processes log JSON lines through the root logger (shared/logsetup.py).
        logging_config=None,
    )
    if settings.access_log:
        # Around Litestar's router, not in `middleware=`: that runs only for routes that
        # exist, and the access log must show unknown paths and wrong methods too.
        app.asgi_handler = AccessLog(app.asgi_handler)
    # Around the router too, so that 404s and 405s are counted (http_metrics.py).
    app.asgi_handler = HttpMetrics(app.asgi_handler)
    if tracing.enabled():
        # Outermost: the access log line is written inside the request's span, so it
        # carries its trace_id (services/gateway/tracing.py).
        app.asgi_handler = RequestSpans(app.asgi_handler)
    return app
