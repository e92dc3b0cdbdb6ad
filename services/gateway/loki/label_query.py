"""The label browser's reads: label names, one label's values, series, index stats.

service_name, level and environment come from the rollups (as GET /api/v1/logs/services
does); host and source, which the rollups do not keep, from the rows in the window.
"""

from __future__ import annotations

import uuid
from typing import Any

from psycopg import AsyncConnection

from services.gateway.loki.compile import (
    LEVEL_LABELS,
    STREAM_LABELS,
    Selection,
    compile_log_query,
    level_label,
)
from services.gateway.loki.log_query import resolve_services
from services.gateway.loki.logql import LogQLError, LogQuery, parse
from services.gateway.loki.read_params import Window
from shared import rollups
from shared.filters import CompiledFilter

# Always listed: host and source are columns of every entry (a scan to prove that none
# has one would cost more than the label browser is worth).
_ALWAYS = ("host", "source")


def selection(query: str | None, w: Window) -> Selection:
    """The window, narrowed by a selector (`query=` or `match[]=`) when one is given."""
    if not query or not query.strip():
        return Selection(CompiledFilter(start=w.start, end=w.end))
    parsed = parse(query)
    if not isinstance(parsed, LogQuery):
        raise LogQLError('expected a log selector such as {service_name="api"}')
    return compile_log_query(parsed, w.start, w.end)


async def _groups(
    conn: AsyncConnection[Any], tenant_id: uuid.UUID, sel: Selection, dims: tuple[str, ...]
) -> list[rollups.Group]:
    sel = await resolve_services(conn, tenant_id, sel)
    if sel.empty or sel.where.is_empty_range:
        return []
    groups, _ = await rollups.count_groups(conn, tenant_id, sel.where, dims)
    return groups


async def label_names(
    conn: AsyncConnection[Any], tenant_id: uuid.UUID, sel: Selection
) -> list[str]:
    groups = await _groups(conn, tenant_id, sel, ("environment",))
    if not groups:
        return []
    names = ["level", "service_name", *_ALWAYS]
    if any(g.key[0] is not None for g in groups):
        names.append("environment")
    return sorted(names)


async def label_values(
    conn: AsyncConnection[Any], tenant_id: uuid.UUID, sel: Selection, name: str
) -> list[str]:
    if name not in STREAM_LABELS and name not in LEVEL_LABELS:
        return []  # a label no stream has: no values, as in Loki
    column = "level" if name in LEVEL_LABELS else name
    groups = await _groups(conn, tenant_id, sel, (column,))
    values = {g.key[0] for g in groups if g.key[0] is not None}
    if column == "level":
        return sorted(level_label(int(v)) for v in values)
    return sorted(str(v) for v in values)


async def series(
    conn: AsyncConnection[Any], tenant_id: uuid.UUID, selections: list[Selection]
) -> list[dict[str, str]]:
    """Every distinct set of stream labels among the entries the selectors match."""
    found: dict[tuple[tuple[str, str], ...], dict[str, str]] = {}
    for sel in selections:
        for g in await _groups(conn, tenant_id, sel, STREAM_LABELS):
            labels = {
                name: (level_label(int(value)) if name == "level" else str(value))
                for name, value in zip(STREAM_LABELS, g.key, strict=True)
                if value is not None
            }
            found.setdefault(tuple(sorted(labels.items())), labels)
    return [found[k] for k in sorted(found)]


async def index_stats(
    conn: AsyncConnection[Any], tenant_id: uuid.UUID, sel: Selection
) -> dict[str, int]:
    """Loki's /index/stats: entries counted on the rollups; a stream is a distinct
    (service, level, environment); bytes and chunks are not kept per query (0)."""
    groups = await _groups(conn, tenant_id, sel, ("service_name", "level", "environment"))
    return {
        "streams": len(groups),
        "chunks": 0,
        "entries": sum(g.count for g in groups),
        "bytes": 0,
    }
