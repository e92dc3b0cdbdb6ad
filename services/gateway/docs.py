"""The API's documentation pages under /schema: Swagger UI, whose files this process
serves itself (the swagger-ui-bundle-v2 package ships them) so the page works without a
network, and problem JSON for any other path there.

The OpenAPI document itself and its corrections are services/gateway/openapi.py's.
"""

from __future__ import annotations

from pathlib import Path

from litestar import Response, Router, get
from litestar.datastructures import CacheControlHeader
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.params import FromPath
from litestar.response import File
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from services.gateway.problems import problem_response
from shared.errors import NotFound

SCHEMA_PATH = "/schema"
ASSETS_PATH = f"{SCHEMA_PATH}/assets"

# What the page loads, and nothing else of the distribution: its index.html and
# swagger-initializer.js would load the Petstore example from the internet.
_ASSETS: dict[str, str] = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}
_ASSET_DIR = Path(str(swagger_ui_path))


@get(
    "/assets/{name:str}",
    include_in_schema=False,
    sync_to_thread=False,
    # The files change only with the package: a day in the browser's cache is safe.
    cache_control=CacheControlHeader(public=True, max_age=86_400),
)
def asset(name: FromPath[str]) -> File:
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no documentation asset {name!r}")
    return File(path=_ASSET_DIR / name, media_type=media_type, content_disposition_type="inline")


def swagger_page() -> SwaggerRenderPlugin:
    """Swagger UI at /schema/swagger (and /schema), its files from /schema/assets."""
    return SwaggerRenderPlugin(
        js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        css_url=f"{ASSETS_PATH}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>",
    )


def _problem_for_unknown_page(response: Response[object]) -> Response[object]:
    """Litestar answers a path under /schema that no page serves (/schema/redoc) with an
    HTML 404 of its own; every other 404 of the API is problem JSON, so this one is too,
    and it says where the pages are."""
    if response.status_code != 404 or response.media_type != "text/html":
        return response
    return problem_response(  # type: ignore[return-value]
        "not-found",
        f"no page here: the API documentation is {SCHEMA_PATH}/swagger and the OpenAPI "
        f"document {SCHEMA_PATH}/openapi.json",
    )


def docs_router() -> Router:
    """The router Litestar adds its OpenAPI pages to (OpenAPIConfig.openapi_router)."""
    return Router(
        SCHEMA_PATH,
        route_handlers=[asset],
        include_in_schema=False,
        after_request=_problem_for_unknown_page,
    )
