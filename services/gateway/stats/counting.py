"""Counting on the rollups (or raw rows where a filter needs them): stats, aggregate
buckets and the services list of one tenant, each read through the query guard."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime
from typing import Any, Literal

from psycopg import AsyncConnection

from services.gateway.query.guard import QueryGuard
from services.gateway.stats.models import (
    AggregateOut,
    Bucket,
    LevelCounts,
    ServiceOut,
    ServicesOut,
    Source,
    StatsOut,
)
from services.gateway.stats.windows import INTERVALS, Interval, Window, bucket_times
from shared import rollups
from shared.filters import CompiledFilter
from shared.kept_hours import KeptHours
from shared.model import LEVEL_NAMES, Level


def _source(used_rollups: bool) -> Source:
    return "rollup" if used_rollups else "raw"


def _levels(counts: dict[int, int]) -> dict[str, int]:
    return {name: counts.get(int(Level[name]), 0) for name in LEVEL_NAMES}


async def _edge(
    conn: AsyncConnection[Any],
    tenant_id: uuid.UUID,
    f: CompiledFilter,
    groups: list[rollups.Group],
    *,
    newest: bool,
) -> datetime | None:
    """The exact time of the oldest (or newest) entry counted in `groups`."""
    if not groups:
        return None
    if newest:
        g = max(groups, key=lambda g: g.last)
        coarse, step = g.last, g.last_step
    else:
        g = min(groups, key=lambda g: g.first)
        coarse, step = g.first, g.first_step
    if not step:
        return coarse
    exact = await rollups.exact_time(conn, tenant_id, f, coarse, step, newest=newest)
    return exact or coarse


async def compute_stats(
    guard: QueryGuard, tenant_id: uuid.UUID, w: Window, kept: KeptHours | None = None
) -> StatsOut:
    f = w.counted
    async with guard.read(tenant_id) as conn:
        groups, used_rollups = await rollups.count_groups(
            conn, tenant_id, f, ("service_name", "level"), kept
        )
        first_ts = await _edge(conn, tenant_id, f, groups, newest=False)
        last_ts = await _edge(conn, tenant_id, f, groups, newest=True)
    by_level: dict[int, int] = {}
    by_service: dict[str, int] = {}
    for g in groups:
        service, level = g.key
        by_level[level] = by_level.get(level, 0) + g.count
        by_service[service] = by_service.get(service, 0) + g.count
    return StatsOut(
        total_count=sum(g.count for g in groups),
        by_level=_levels(by_level),
        by_service=dict(sorted(by_service.items(), key=lambda kv: (-kv[1], kv[0]))),
        first_timestamp=first_ts,
        last_timestamp=last_ts,
        start_time=w.start,
        end_time=w.requested_end,
        source=_source(used_rollups),
    )


def _every_bucket(rows: list[rollups.BucketCounts], times: list[datetime]) -> list[Bucket]:
    """A bucket for each of `times`, with the counts of the row of that time or zeros;
    both lists ascending. One walk through both, no lookup: a day of minutes is 1,441
    buckets."""
    zero = LevelCounts(0, 0, 0, 0, 0)  # one for every empty bucket
    counted = iter(rows)
    row = next(counted, None)
    buckets = []
    for t in times:
        while row is not None and row.time < t:  # none such, but never stuck on one
            row = next(counted, None)
        if row is not None and row.time == t:
            buckets.append(Bucket(t, sum(row.levels), LevelCounts(*row.levels)))
            row = next(counted, None)
        else:
            buckets.append(Bucket(t, 0, zero))
    return buckets


async def compute_aggregate(
    guard: QueryGuard,
    tenant_id: uuid.UUID,
    w: Window,
    interval_name: Interval,
    group_by: Literal["service"] | None,
    kept: KeptHours | None = None,
) -> AggregateOut:
    interval = INTERVALS[interval_name]
    async with guard.read(tenant_id) as conn:
        rows, used_rollups = await rollups.count_buckets(
            conn, tenant_id, w.counted, interval, by_service=group_by == "service", kept=kept
        )
    if group_by == "service":
        buckets = [
            Bucket(r.time, sum(r.levels), LevelCounts(*r.levels), r.service_name) for r in rows
        ]
    else:
        data_last = rows[-1].time if rows else None
        buckets = _every_bucket(rows, bucket_times(w, interval, data_last))
    return AggregateOut(
        interval=interval_name,
        group_by=group_by,
        start_time=w.start,
        end_time=w.requested_end,
        source=_source(used_rollups),
        buckets=buckets,
    )


async def compute_services(
    guard: QueryGuard, tenant_id: uuid.UUID, w: Window, kept: KeptHours | None = None
) -> ServicesOut:
    f = w.counted
    services = []
    async with guard.read(tenant_id) as conn:
        groups, used_rollups = await rollups.count_groups(
            conn, tenant_id, f, ("service_name",), kept
        )
        for g in sorted(groups, key=lambda g: g.key[0]):
            last_seen = rollups.floor_to(g.last, rollups.MINUTE)
            if g.last_step > rollups.MINUTE:
                # Seen last in a day or hour cell (not recently): find the minute.
                one = replace(f, services=(g.key[0],))
                found = await rollups.narrow(conn, tenant_id, one, g.last, g.last_step, newest=True)
                last_seen = rollups.floor_to(found[0], rollups.MINUTE) if found else last_seen
            services.append(ServiceOut(service_name=g.key[0], count=g.count, last_seen=last_seen))
    return ServicesOut(
        services=services,
        start_time=w.start,
        end_time=w.requested_end,
        source=_source(used_rollups),
    )
