"""POST /api/v1/logs/ndjson: JSON lines (or a JSON array) as agents ship them, with
query parameters naming the fields (mapping.py); answered exactly as /api/v1/logs/batch
answers (202 with ids and per-record errors; problem JSON when refused whole).

Content-Encoding gzip, deflate or snappy is decoded within the tenant's body limit
(services/gateway/ingest/compression.py).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)
from litestar.params import QueryParameter

from services.gateway.auth import OPENAPI_SECURITY, Caller
from services.gateway.content_type import MEDIA_TYPES_OPT
from services.gateway.ingest.accept import IngestAnswer, Ingestor
from services.gateway.ingest.compression import content_encoding, decompress
from services.gateway.ingest.levels import level_name
from services.gateway.ingest.routes import INGEST_DEPENDENCIES, answer_accepted, read_body
from services.gateway.ndjson.accept import accept_ndjson
from services.gateway.ndjson.mapping import FieldNames
from shared.errors import BadRequest

# What Fluent Bit, Vector and curl declare for JSON lines (none at all counts too).
MEDIA_TYPES = (
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/x-jsonlines",
    "application/json-lines",
    "application/json",
    "text/json",
    "",
)


def _field_parameter(name: str, description: str) -> Any:
    return QueryParameter(name=name, max_length=256, required=False, description=description)


def _names(value: str | None, default: tuple[str, ...], parameter: str) -> tuple[str, ...]:
    if value is None:
        return default
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    if not names or any(not name.isprintable() for name in names):
        raise BadRequest(f"{parameter} must name fields, separated by commas")
    return names


def field_names(
    message: str | None,
    time: str | None,
    level: str | None,
    service: str | None,
    default_service: str | None,
    default_level: str | None,
) -> FieldNames:
    """The mapping the query parameters ask for, checked (400 naming the parameter)."""
    base = FieldNames()
    if default_service is not None and (
        not 1 <= len(default_service) <= 128 or not default_service.isprintable()
    ):
        raise BadRequest("_default_service must be 1 to 128 printable characters")
    known_level = level_name(default_level) if default_level is not None else base.default_level
    if known_level is None:
        raise BadRequest("_default_level must be a level name: DEBUG, INFO, WARN, ERROR, FATAL")
    return FieldNames(
        message=_names(message, base.message, "_msg_field"),
        time=_names(time, base.time, "_time_field"),
        level=_names(level, base.level, "_level_field"),
        service=_names(service, base.service, "_service_field"),
        default_service=default_service or base.default_service,
        default_level=known_level,
    )


@dataclasses.dataclass
class NdjsonOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="One JSON object per line, or a JSON array of objects.",
            content={
                "application/x-ndjson": OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING)),
                "application/json": OpenAPIMediaType(
                    schema=Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.OBJECT))
                ),
            },
        )


@post(
    "/api/v1/logs/ndjson",
    status_code=202,
    summary="Ingest JSON lines (Fluent Bit, Vector)",
    description="NDJSON or a JSON array. `_msg_field`, `_time_field`, `_level_field` and "
    "`_service_field` name the record's fields (comma-separated: the first present wins); "
    "other fields go to metadata. Answered as /api/v1/logs/batch.",
    operation_class=NdjsonOperation,
    opt={MEDIA_TYPES_OPT: MEDIA_TYPES},
    dependencies=INGEST_DEPENDENCIES,
    responses={202: ResponseSpec(IngestAnswer, description="The valid records are queued")},
    security=OPENAPI_SECURITY,
    tags=["ingest"],
)
async def ingest_ndjson(
    request: Request[Any, Any, Any],
    caller: NamedDependency[Caller],
    ingestor: NamedDependency[Ingestor],
    msg_field: Annotated[
        str | None,
        _field_parameter("_msg_field", "The message's field (default message; Fluent Bit: log)"),
    ] = None,
    time_field: Annotated[
        str | None, _field_parameter("_time_field", "The time's field (default timestamp)")
    ] = None,
    level_field: Annotated[
        str | None, _field_parameter("_level_field", "The level's field (default level)")
    ] = None,
    service_field: Annotated[
        str | None, _field_parameter("_service_field", "The service's field (default service_name)")
    ] = None,
    default_service: Annotated[
        str | None, _field_parameter("_default_service", "The service of a record without one")
    ] = None,
    default_level: Annotated[
        str | None,
        _field_parameter("_default_level", "The level of a record without one (default INFO)"),
    ] = None,
) -> Response[bytes]:
    caller.require("ingest")
    names = field_names(
        msg_field, time_field, level_field, service_field, default_service, default_level
    )
    encoding = content_encoding(request.headers.get("content-encoding"))
    tenant, body, idem_key = await read_body(request, caller, ingestor)
    data = decompress(body, encoding, tenant.limits.max_body_bytes)
    return answer_accepted(await accept_ndjson(ingestor, tenant, data, names, idem_key))
