"""What the counting endpoints answer: stats, aggregate buckets, services, storage."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

import msgspec

from services.gateway.stats.windows import Interval

Source = Literal["rollup", "raw"]


class StatsOut(msgspec.Struct):
    """Counts of the entries matching the filter in [start_time, end_time).

    `by_level` always lists the five levels; `by_service` the services with entries.
    `first_timestamp`/`last_timestamp` are the oldest and newest matching entries (null
    when none). `end_time` null: the window is open.
    """

    total_count: int
    by_level: dict[str, int]
    by_service: dict[str, int]
    first_timestamp: datetime | None
    last_timestamp: datetime | None
    start_time: datetime
    end_time: datetime | None
    source: Source


class LevelCounts(msgspec.Struct):
    """Entries per level, all five (a struct rather than a dict: a 1-minute histogram
    over a day makes 1,441 of them per answer, built positionally in C)."""

    DEBUG: int
    INFO: int
    WARN: int
    ERROR: int
    FATAL: int


class Bucket(msgspec.Struct, omit_defaults=True):
    """Entries in [time, time + interval): in total and per level (all five listed)."""

    time: datetime
    count: int
    by_level: LevelCounts
    service_name: str | None = None


class AggregateOut(msgspec.Struct):
    """Buckets aligned to UTC (1d at midnight, 6h at 00/06/12/18 h), oldest first.

    Without `group_by` every bucket of the window is listed, empty ones with zeros;
    with `group_by: "service"` one bucket per service and interval that has entries.
    The first and last buckets count only the part inside the window.
    """

    interval: Interval
    group_by: Literal["service"] | None
    start_time: datetime
    end_time: datetime | None
    source: Source
    buckets: list[Bucket]


class ServiceOut(msgspec.Struct):
    """A service with entries in the window: how many, and the UTC minute of its newest."""

    service_name: str
    count: int
    last_seen: datetime


class ServicesOut(msgspec.Struct):
    services: list[ServiceOut]
    start_time: datetime
    end_time: datetime | None
    source: Source


class TenantUsageOut(msgspec.Struct):
    tenant_id: uuid.UUID
    rows: int
    bytes: int


class AllTenantsOut(msgspec.Struct):
    """Every tenant, and the disk used by log_entries (all partitions, with indexes)."""

    tenants: list[TenantUsageOut]
    rows: int
    bytes: int
    table_bytes: int
    index_bytes: int
    total_bytes: int
    bytes_per_row: float | None


class StorageOut(msgspec.Struct):
    """The caller's tenant: rows stored and their size (text, JSON and fixed columns, as
    the writer counts it; on disk with indexes it is more, see `all_tenants`), against
    its quota: its retention policy's max_size_gb (`quota_scope` "tenant"), else
    LOG_MAX_SIZE_GB, one limit for all tenants together ("all_tenants"; `quota_used` is
    then this tenant's share of it). `all_tenants` only for an admin caller that asks
    (`?all_tenants=true`)."""

    tenant_id: uuid.UUID
    rows: int
    bytes: int
    quota_bytes: int
    quota_used: float
    quota_scope: Literal["tenant", "all_tenants"]
    all_tenants: AllTenantsOut | None = None
