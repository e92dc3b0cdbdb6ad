"""The query API's inputs: GET query parameters and the POST body, turned into one
`LogFilter` plus a `PageRequest`.

GET lists (`services`, `levels`) come as repeated parameters or comma-separated;
metadata equality filters as `metadata.<key>=<value>`, where `true`/`false` and JSON
numbers are typed and anything else (or a value in double quotes) is a string.
Unknown parameters are refused rather than ignored: a typo must not widen a query.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from litestar import Request
from litestar.datastructures import MultiDict
from litestar.params import Parameter

from services.gateway.query.store import Sort
from shared.errors import BadRequest, FieldError, Forbidden, ValidationFailed
from shared.filters import LogFilter, MetadataValue

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# Offset paging reads and discards every row before the page: past this many rows the
# caller is sent to the cursor, which costs the same at any depth.
MAX_OFFSET = 100_000

_NUMBER = re.compile(r"^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$")
_FILTER_FIELDS = frozenset(LogFilter.__struct_fields__)
_PAGE_FIELDS = frozenset({"page", "page_size", "cursor", "sort"})
_LIST_FIELDS = {"service_name": "services", "level": "levels"}


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Which page: by number (offset) or after a cursor, of what size, in what order."""

    page: int = 1
    page_size: int = DEFAULT_PAGE_SIZE
    cursor: str | None = None
    sort: Sort = "desc"

    def __post_init__(self) -> None:
        if (self.page - 1) * self.page_size > MAX_OFFSET and self.cursor is None:
            raise BadRequest(
                f"page {self.page} of {self.page_size} starts past row {MAX_OFFSET}: follow "
                "next_cursor from page to page instead (as fast at any depth)",
                errors=[FieldError("page", f"(page - 1) * page_size must be <= {MAX_OFFSET}")],
            )


def page_size(requested: int | None, default: int = DEFAULT_PAGE_SIZE) -> int:
    """The page size used: the default when absent; more than MAX_PAGE_SIZE is refused
    (a silently smaller page would look like the end of the results)."""
    if requested is None:
        return default
    if requested > MAX_PAGE_SIZE:
        raise ValidationFailed(
            f"page_size {requested} is over the limit of {MAX_PAGE_SIZE}",
            errors=[FieldError("page_size", f"must be between 1 and {MAX_PAGE_SIZE}")],
        )
    return requested


class BodyFilter(LogFilter, kw_only=True, forbid_unknown_fields=True):
    """A filter sent as a JSON body (query, aggregate): the seed's query shape.

    `tenant_id` may be sent (the seed's shape has it) but must be the caller's tenant;
    the tenant always comes from the credential.
    """

    tenant_id: uuid.UUID | None = None

    def log_filter(self, caller_tenant: uuid.UUID) -> LogFilter:
        """The filter alone, once `tenant_id` is checked against the caller's."""
        if self.tenant_id is not None and self.tenant_id != caller_tenant:
            raise Forbidden(
                "tenant_id in the body is not the caller's tenant; queries only read the "
                "caller's own logs (omit tenant_id)"
            )
        return LogFilter(**{name: getattr(self, name) for name in LogFilter.__struct_fields__})


class QueryBody(BodyFilter, kw_only=True, forbid_unknown_fields=True):
    """The body of POST /api/v1/logs/query: the seed's query shape plus our extras."""

    page: Annotated[int, msgspec.Meta(ge=1)] = 1
    page_size: Annotated[int, msgspec.Meta(ge=1)] = DEFAULT_PAGE_SIZE
    cursor: str | None = None
    sort: Sort = "desc"

    def page_request(self) -> PageRequest:
        return PageRequest(
            page=self.page, page_size=page_size(self.page_size), cursor=self.cursor, sort=self.sort
        )


def filter_from_params(
    params: MultiDict[str], declared: Mapping[str, Any], extra_allowed: Iterable[str] = ()
) -> LogFilter:
    """A LogFilter from GET query parameters. `declared` holds the values Litestar parsed
    (typed, documented in OpenAPI); `metadata.<key>` parameters are read from `params`."""
    allowed = _FILTER_FIELDS | _PAGE_FIELDS | set(extra_allowed)
    unknown = sorted(
        key for key in params if key not in allowed and not key.startswith("metadata.")
    )
    if unknown:
        raise BadRequest(
            f"unknown query parameter(s): {', '.join(unknown)}",
            errors=[FieldError(key, "not a filter of this endpoint") for key in unknown],
        )
    values: dict[str, Any] = {}
    for name in _FILTER_FIELDS - {"metadata"}:
        value = declared.get(name)
        if value is None:
            continue
        if name in _LIST_FIELDS or name in _LIST_FIELDS.values():
            continue
        values[name] = value
    services = _split_list(declared.get("services")) + list(declared.get("service_name") or [])
    levels = _split_list(declared.get("levels")) + list(declared.get("level") or [])
    if services:
        values["services"] = services
    if levels:
        values["levels"] = levels
    metadata = {
        key.removeprefix("metadata."): _metadata_value(value)
        for key, value in params.multi_items()
        if key.startswith("metadata.")
    }
    if metadata:
        values["metadata"] = metadata
    try:
        return msgspec.convert(values, LogFilter)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid query parameter: {exc}") from None


def _split_list(values: Sequence[str] | None) -> list[str]:
    """Repeated parameters, each possibly comma-separated; blanks dropped."""
    return [part.strip() for value in values or () for part in value.split(",") if part.strip()]


def _metadata_value(text: str) -> MetadataValue:
    if text in ("true", "false"):
        return text == "true"
    if _NUMBER.match(text):
        number = msgspec.json.decode(text)
        if isinstance(number, int | float):
            return number
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            decoded = msgspec.json.decode(text)
        except msgspec.DecodeError:
            return text
        if isinstance(decoded, str):
            return decoded
    return text


FilterTexts = Annotated[
    list[str] | None,
    Parameter(description="Repeat the parameter or separate values by commas (OR)."),
]
FilterText = Annotated[str | None, Parameter(max_length=256)]
FilterTime = Annotated[
    str | None,
    Parameter(description="RFC 3339 with a zone (2024-01-15T00:00:00Z) or relative (now-1h)."),
]


async def provide_filter(
    request: Request[Any, Any, Any],
    service_name: FilterTexts = None,
    services: FilterTexts = None,
    level: FilterTexts = None,
    levels: FilterTexts = None,
    min_level: FilterText = None,
    start_time: FilterTime = None,
    end_time: FilterTime = None,
    trace_id: FilterText = None,
    span_id: FilterText = None,
    user_id: FilterText = None,
    request_id: FilterText = None,
    search: Annotated[
        str | None,
        Parameter(
            max_length=512,
            description='Words and "quoted phrases", each a substring of the message '
            "(ASCII case ignored).",
        ),
    ] = None,
    environment: FilterText = None,
    host: FilterText = None,
    source: FilterText = None,
) -> LogFilter:
    """The filter of a GET endpoint (list, stats, services, stream), as a dependency so
    its parameters are declared (and documented in OpenAPI) once. Parameters the handler
    itself declares (page, cursor, since, ...) are not refused as unknown."""
    declared = {
        "service_name": service_name,
        "services": services,
        "level": level,
        "levels": levels,
        "min_level": min_level,
        "start_time": start_time,
        "end_time": end_time,
        "trace_id": trace_id,
        "span_id": span_id,
        "user_id": user_id,
        "request_id": request_id,
        "search": search,
        "environment": environment,
        "host": host,
        "source": source,
    }
    own = request.route_handler.parsed_fn_signature.parameters.keys()
    return filter_from_params(request.query_params, declared, extra_allowed=own)
