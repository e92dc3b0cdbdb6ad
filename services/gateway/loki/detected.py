"""Loki's /detected_labels and /detected_fields, where they are cheap for us.

Detected labels (pkg/querier/querier.go `DetectedLabels`): each stream label with its
number of distinct values in the window, `{"detectedLabels": [{"label", "cardinality"}]}`.
Ours come from the rollups (service_name, level, environment), as GET
/api/v1/logs/services does; as in Loki, a label whose values are all numbers or UUIDs is
left out (an id, not something to browse by). host and source, which the rollups do not
keep, are not listed.

Detected fields (pkg/querier/queryrange/detected_fields.go): what the newest `line_limit`
entries matching a log query carry besides their stream labels, with a type guessed from
a value and the number of distinct values seen, `{"fields": [{"label", "type",
"cardinality", "parsers"}], "limit": N}`. Ours are the structured metadata of those
entries: the id fields and the `metadata` keys (`parsers` null, as Loki writes for
structured metadata). A bounded sample, never a scan.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from typing import Any

from psycopg import AsyncConnection

from services.gateway.loki.compile import Selection, level_label
from services.gateway.loki.label_query import selection
from services.gateway.loki.log_query import read_entries, resolve_services, structured_metadata
from services.gateway.loki.read_params import Window
from shared import rollups

_ROLLUP_LABELS = ("service_name", "level", "environment")
# Loki's defaults: 100 lines (line_limit), 1000 fields (limit, formerly field_limit).
DEFAULT_LINE_LIMIT = 100
MAX_LINE_LIMIT = 1000
DEFAULT_FIELD_LIMIT = 1000

_UUID = re.compile(r"^(urn:uuid:)?\{?[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}\}?$")
_GO_INT = re.compile(r"^[+-]?\d+$")
_GO_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(inf|infinity|nan)$", re.I)
_GO_BOOL = frozenset({"1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false",
                      "False"})  # fmt: skip
_GO_DURATION = re.compile(r"^[+-]?((\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h))+$|^0$")
_BYTES = re.compile(
    r"^\d+(\.\d+)?\s*([kmgtpe]i?b?|b|bytes?|[kmgtpe]ib?)$", re.I
)  # go-humanize ParseBytes: a number and a unit


def _is_id(value: str) -> bool:
    """Loki's containsAllIDTypes, for one value: a number or a UUID."""
    return bool(_GO_FLOAT.match(value) or _UUID.match(value))


def field_type(value: str) -> str:
    """Loki's determineType: int, float, boolean, duration, bytes, else string."""
    if _GO_INT.match(value) and -(2**63) <= int(value) < 2**63:
        return "int"
    if _GO_FLOAT.match(value):
        return "float"
    if value in _GO_BOOL:
        return "boolean"
    if _GO_DURATION.match(value):
        return "duration"
    if _BYTES.match(value):
        return "bytes"
    return "string"


async def detected_labels(
    conn: AsyncConnection[Any], tenant_id: uuid.UUID, query: str | None, w: Window
) -> list[dict[str, Any]]:
    sel: Selection = await resolve_services(conn, tenant_id, selection(query, w))
    if sel.empty or sel.where.is_empty_range:
        return []
    groups, _ = await rollups.count_groups(conn, tenant_id, sel.where, _ROLLUP_LABELS)
    values: dict[str, set[str]] = defaultdict(set)
    for g in groups:
        for name, value in zip(_ROLLUP_LABELS, g.key, strict=True):
            if value is None or value == "":
                continue
            values[name].add(level_label(int(value)) if name == "level" else str(value))
    return [
        {"label": name, "cardinality": len(found)}
        for name, found in sorted(values.items())
        if not all(_is_id(v) for v in found)
    ]


async def detected_fields(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    sel: Selection,
    line_limit: int,
    field_limit: int,
) -> dict[str, Any]:
    entries = await read_entries(conn, tenant_id, sel, "backward", line_limit)
    seen: dict[str, set[str]] = {}
    types: dict[str, str] = {}
    for e in entries:
        for name, value in structured_metadata(e).items():
            if name not in seen:
                if len(seen) >= field_limit:
                    continue
                seen[name] = set()
            seen[name].add(value)
            types[name] = field_type(value)  # as Loki: the type of the latest value looked at
    fields = [
        {"label": name, "type": types[name], "cardinality": len(found), "parsers": None}
        for name, found in sorted(seen.items())
    ]
    # Loki omits both when empty (`fields,omitempty`, and the limit only with fields).
    return {"fields": fields, "limit": field_limit} if fields else {}
