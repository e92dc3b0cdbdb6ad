"""Log queries (`{…} |= "…"`): entries read as GET /api/v1/logs reads them, answered as
Loki's `streams` (one stream per distinct set of labels).

Stream labels are service_name, level (lower case), environment, host and source. The
ids (trace_id, span_id, request_id, user_id) and the `metadata` object are Loki's
structured metadata: with `X-Loki-Response-Encoding-Flags: categorize-labels` (Grafana
sends it) they come apart as each value's third element, else they are merged into the
stream's labels, as Loki does.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
from psycopg import AsyncConnection

from services.gateway.loki.compile import ID_FIELDS, Selection, level_label
from services.gateway.loki.read_params import Direction, nanos
from services.gateway.query.store import Sort, fetch_entries
from shared import rollups
from shared.filters import CompiledFilter
from shared.model import Level, LogEntryOut
from shared.open_day_search import split_now

_WINDOW_SERVICES = ("service_name",)
_json = msgspec.json.Encoder()


async def resolve_services(
    conn: AsyncConnection[Any], tenant_id: uuid.UUID, sel: Selection
) -> Selection:
    """`sel` with its service_name pattern turned into the names it selects among the
    tenant's services in the window (read from the rollups, as GET /services does)."""
    if sel.service_test is None or sel.empty:
        return sel
    groups, _ = await rollups.count_groups(
        conn, tenant_id, _service_window(sel.where), _WINDOW_SERVICES
    )
    names = [g.key[0] for g in groups if sel.service_test(g.key[0])]
    return sel.with_services(names, every=len(names) == len(groups))


def _service_window(w: CompiledFilter) -> CompiledFilter:
    """Which services exist in the window: only the rollup dimensions narrow it, so the
    rollups answer (the other terms would force a raw scan for a list they know)."""
    return CompiledFilter(start=w.start, end=w.end, levels=w.levels, environment=w.environment)


async def read_entries(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    sel: Selection,
    direction: Direction,
    limit: int,
) -> list[LogEntryOut]:
    """Up to `limit` matching entries, newest first (backward) or oldest first."""
    sel = await resolve_services(conn, tenant_id, sel)
    if sel.empty or sel.where.is_empty_range:
        return []
    sort: Sort = "desc" if direction == "backward" else "asc"
    split = split_now()  # a line filter can use today's search index
    return await fetch_entries(conn, tenant_id, sel.where, sort=sort, limit=limit, split=split)


def stream_labels(e: LogEntryOut) -> dict[str, str]:
    labels = {"service_name": e.service_name, "level": level_label(int(Level[e.level]))}
    for name in ("environment", "host", "source"):
        value = getattr(e, name)
        if value:
            labels[name] = value
    return labels


def structured_metadata(e: LogEntryOut) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in ID_FIELDS:
        value = getattr(e, name)
        if value:
            found[name] = value
    for key, value in (e.metadata or {}).items():
        found.setdefault(key, value if isinstance(value, str) else _json.encode(value).decode())
    return found


def streams(entries: list[LogEntryOut], *, categorize: bool) -> list[dict[str, Any]]:
    """Entries grouped into Loki streams, each stream's values in the entries' order."""
    grouped: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    for e in entries:
        labels = stream_labels(e)
        metadata = structured_metadata(e)
        if categorize:
            value: list[Any] = [nanos(e.timestamp), e.message]
            if metadata:
                value.append({"structuredMetadata": metadata})
        else:
            for key, text in metadata.items():
                labels.setdefault(key, text)
            value = [nanos(e.timestamp), e.message]
        stream_key = tuple(sorted(labels.items()))
        stream = grouped.get(stream_key)
        if stream is None:
            stream = grouped[stream_key] = {"stream": labels, "values": []}
        stream["values"].append(value)
    return list(grouped.values())
