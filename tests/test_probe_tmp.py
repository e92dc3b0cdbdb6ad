from dataclasses import replace
from litestar.testing import AsyncTestClient
from services.gateway.app import create_app
from tests.conftest import tenant_headers

async def test_probe(settings):
    small = replace(settings, max_body_bytes=2048)
    async with AsyncTestClient(app=create_app(small)) as c:
        h = tenant_headers()
        for method, path, kw in [
            ("POST", "/api/v1/logs/query", {"json": {"searc": "x"}}),
            ("POST", "/api/v1/logs/aggregate", {"json": {"interval": "2h"}}),
            ("POST", "/api/v1/logs/query", {"content": b'{}', "headers": {**h, "Content-Type": "text/plain"}}),
            ("POST", "/api/v1/logs/query", {"content": b'{"search": "' + b"x"*5000 + b'"}'}),
            ("POST", "/api/v1/logs/batch", {"content": b'{"entries": [' + b'{"service_name":"s","level":"INFO","message":"m"},'*100 + b'{}]}'}),
            ("POST", "/api/v1/logs/query", {"content": b''}),
            ("POST", "/api/v1/logs/aggregate", {"content": b''}),
            ("POST", "/api/v1/logs", {"content": b''}),
            ("POST", "/api/v1/logs/batch", {"content": b''}),
            ("POST", "/api/v1/admin/tenants", {"content": b''}),
            ("GET", "/schema/redoc", {}),
            ("GET", "/schema/swagger", {}),
            ("GET", "/schema/elements", {}),
            ("GET", "/schema/rapidoc", {}),
            ("GET", "/schema/nothing", {}),
            ("GET", "/schema", {}),
            ("GET", "/schema/openapi.yaml", {}),
        ]:
            kw.setdefault("headers", h)
            r = await c.request(method, path, **kw)
            print(method, path, r.status_code, r.headers.get("content-type"), r.text[:300])
