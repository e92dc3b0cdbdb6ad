"""The web log explorer's files under /ui/, and `/` sending a browser there.

The explorer is hand-written HTML, CSS and JavaScript modules in `static/` (no build
step, nothing fetched from elsewhere at run time). The page itself is public, like any
login page: the data it shows comes only from the /api/v1 routes, which the browser
calls with the user's key in a header, so the page grants nothing by itself.
"""

from __future__ import annotations

from pathlib import Path

from litestar import Router, get
from litestar.params import FromPath
from litestar.response import File, Redirect

from shared.errors import NotFound

UI_PATH = "/ui"
_STATIC = Path(__file__).parent / "static"
_MEDIA_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
# Listed once: a name that is not one of these files is 404, so no request ever reads
# outside the directory whatever it spells (`..`, encoded slashes).
_FILES: dict[str, Path] = {
    p.name: p for p in _STATIC.iterdir() if p.is_file() and p.suffix in _MEDIA_TYPES
}

# Log lines are hostile input: even if one ever reached the DOM as markup, the browser
# would run no inline script or handler and load nothing from elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Small files that change with each release: revalidated rather than cached stale.
    "Cache-Control": "no-cache",
}


def _file(name: str) -> File:
    path = _FILES.get(name)
    if path is None:
        raise NotFound(f"no explorer file {name!r}")
    return File(
        path=path,
        media_type=_MEDIA_TYPES[path.suffix],
        content_disposition_type="inline",
        headers=SECURITY_HEADERS,
    )


@get("/", sync_to_thread=False)
def page() -> File:
    """The explorer's one page; what it shows is in the URL's query string."""
    return _file("index.html")


@get("/{name:str}", sync_to_thread=False)
def asset(name: FromPath[str]) -> File:
    return _file(name)


@get("/", include_in_schema=False, sync_to_thread=False)
def root() -> Redirect:
    """`/` is where a browser lands: the explorer."""
    return Redirect(f"{UI_PATH}/", status_code=302)


def ui_router() -> Router:
    return Router(UI_PATH, route_handlers=[page, asset], include_in_schema=False)
