"""The documentation pages work without a network: Swagger UI's page loads its script,
styles and icon from this gateway, and each of them is served."""

from __future__ import annotations

import re

import pytest

# Every URL the page makes the browser fetch: src= and href= attributes.
_FETCHED = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']+)["']""")
_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


@pytest.mark.parametrize("page", ["/schema/swagger", "/schema"])
async def test_the_swagger_page_loads_only_files_this_gateway_serves(client, page) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    urls = _FETCHED.findall(response.text)
    assert len(urls) >= 4, urls  # the bundle, the preset, the styles, the icon
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        suffix = url[url.rfind(".") :]
        assert asset.headers["content-type"].startswith(_TYPES[suffix]), url
        assert len(asset.content) > 0


async def test_an_unknown_asset_is_a_problem_404(client) -> None:
    for name in ("index.html", "swagger-initializer.js", "..%2Fsettings.py", "nothing.js"):
        response = await client.get(f"/schema/assets/{name}")
        assert response.status_code == 404, name
        assert response.headers["content-type"] == "application/problem+json"
