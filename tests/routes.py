"""The app's own route table, for tests that must cover every endpoint (including those
added after the test was written)."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from google.rpc.status_pb2 import Status
from litestar import Litestar
from litestar.routes import HTTPRoute

# Routes needing no caller: health probes and the OpenAPI document.
# /ui: the web explorer's files (its data comes from /api/v1 with the user's key);
# /metrics: Prometheus scrapes it without a key (no tenant data: README "Metrics").
PUBLIC_PATHS = ("/health", "/ready", "/live", "/", "/ui", "/ui/{}", "/metrics")
_PARAM = re.compile(r"\{([^}:]+)(?::([^}]+))?\}")
_SAMPLE = {"uuid": "{uuid}", "int": "1", "str": "probe", "path": "probe"}


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    template: str  # "/api/v1/logs/{}" (parameter names and types dropped)
    path: str  # Litestar's own path, with parameter types

    def url(self, **values: str) -> str:
        """The path with each parameter set: by name from `values`, else a sample."""

        def fill(match: re.Match[str]) -> str:
            name, kind = match.group(1), match.group(2) or "str"
            if name in values:
                return values[name]
            sample = _SAMPLE.get(kind, "probe")
            return str(uuid.uuid4()) if sample == "{uuid}" else sample

        return _PARAM.sub(fill, self.path)

    def url_all(self, value: str) -> str:
        """The path with every parameter set to `value`."""
        return _PARAM.sub(lambda _: value, self.path)

    @property
    def scope(self) -> str:
        """The scope a caller needs here (by the API's conventions)."""
        if self.template.startswith(("/api/v1/admin", "/api/v1/retention")):
            return "admin"
        if self.template.startswith("/api/v1/alerts"):
            return "alerts"
        if self.method == "POST" and self.template in (
            "/api/v1/logs",
            "/api/v1/logs/batch",
            "/api/v1/logs/ndjson",
            "/v1/logs",
            "/api/v1/otlp/v1/logs",
            "/loki/api/v1/push",
        ):
            return "ingest"
        if self.template.startswith("/api/v1/logs"):
            return "query"
        return "tenant"


def endpoints(app: Litestar) -> list[Endpoint]:
    """Every (method, path) the app serves, without OPTIONS/HEAD and the schema pages."""
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path.startswith("/schema"):
            continue
        for method in sorted(route.methods - {"OPTIONS", "HEAD"}):
            template = _PARAM.sub("{}", route.path).rstrip("/") or "/"
            found.append(Endpoint(method, template, route.path))
    return found


def needs_caller(endpoint: Endpoint) -> bool:
    return endpoint.template not in PUBLIC_PATHS


# Routes of another protocol, whose errors have that protocol's shape (not problem JSON).
OTLP_PATHS = ("/v1/logs", "/api/v1/otlp/v1/logs")


def own_error_shape(endpoint: Endpoint) -> bool:
    return endpoint.template in OTLP_PATHS or endpoint.template.startswith("/loki/")


def error_detail(response: Any) -> str:
    """What an error answer says, whatever its shape: problem JSON's `detail`, the
    `message` of OTLP's google.rpc.Status (JSON or protobuf), or a plain-text answer."""
    content_type = response.headers.get("content-type", "")
    if content_type.startswith("application/problem+json"):
        return str(response.json()["detail"])
    if content_type.startswith("application/json"):
        return str(response.json()["message"])
    if content_type.startswith("application/x-protobuf"):
        return str(Status.FromString(response.content).message)
    return str(response.text)
