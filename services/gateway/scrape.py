"""GET /metrics: the gateway's Prometheus metrics, on its API port.

Outside /api/v1, so tenant authentication (auth.scope_guard) never applies: a scraper
holds no API key, and the figures name no tenant. Left out of the OpenAPI document: it is
for Prometheus, not for API clients (README, "Metrics").
"""

from __future__ import annotations

from litestar import Response, get
from litestar.di import NamedDependency
from prometheus_client import generate_latest

from services.gateway.metrics import REGISTRY
from services.gateway.state import GatewayState
from services.gateway.stream_metrics import refresh_stream_metrics
from shared.redis_keys import RedisKeys

# The classic text format, which every Prometheus reads (the library's CONTENT_TYPE_LATEST
# names 1.0.0, the same bytes for our ASCII names); Litestar adds `; charset=utf-8`.
_TEXT_FORMAT = "text/plain; version=0.0.4"


@get("/metrics", include_in_schema=False)
async def metrics(gateway: NamedDependency[GatewayState]) -> Response[bytes]:
    settings = gateway.settings
    await refresh_stream_metrics(
        gateway.redis, RedisKeys.from_settings(settings), settings.stream_max_backlog
    )
    return Response(generate_latest(REGISTRY), media_type=_TEXT_FORMAT)
