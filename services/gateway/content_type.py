"""Every request body of the API is JSON: another declared media type is refused with
415 before the body is read, on every route alike. A route speaking another protocol
(OTLP's protobuf, Loki's push, NDJSON) names the media types it takes in its handler's
`opt` under MEDIA_TYPES_OPT; the guard then accepts those (and only those) there."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from shared.errors import UnsupportedMediaType

_JSON_TYPES = ("application/json", "text/json")
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
# A route handler's `opt` key: the media types (lower case, no parameters) it decodes.
MEDIA_TYPES_OPT = "media_types"


def is_json_media_type(content_type: str) -> bool:
    """Whether a Content-Type header (parameters allowed) names JSON; absent counts."""
    media_type = content_type.split(";")[0].strip().lower()
    return not media_type or media_type in _JSON_TYPES or media_type.endswith("+json")


async def json_body_guard(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """App-wide guard (after authentication): a body declared as anything but JSON (or,
    where the handler names its own media types, anything but those) is 415."""
    if connection.scope.get("method") not in _WITH_BODY:
        return
    content_type = connection.headers.get("content-type", "")
    accepted = handler.opt.get(MEDIA_TYPES_OPT)
    if accepted is not None:
        media_type = content_type.split(";")[0].strip().lower()
        if media_type not in accepted:
            raise UnsupportedMediaType(
                f"send one of {', '.join(t for t in accepted if t)} as Content-Type, "
                f"not {media_type!r}"
            )
        return
    if not is_json_media_type(content_type):
        raise UnsupportedMediaType(
            f"send JSON (Content-Type: application/json), not {content_type.split(';')[0]!r}"
        )
