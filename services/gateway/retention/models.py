"""What the retention API answers: policies, a page of them, the policy in force for a
tenant, and the janitor's runs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec


class RetentionPolicyOut(msgspec.Struct):
    """A tenant's own policy. `max_size_gb` is kept to 3 decimals (1 MB)."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    retention_days: int
    max_size_gb: float | None
    archive_enabled: bool
    archive_path: str | None
    created_at: datetime
    updated_at: datetime


class PolicyPage(msgspec.Struct):
    """Policies, oldest first: one (the caller's tenant's) or none for a tenant's key,
    every tenant's for the admin key."""

    policies: list[RetentionPolicyOut]
    limit: int
    offset: int
    has_more: bool


class EffectivePolicyOut(msgspec.Struct):
    """The policy in force for a tenant: its own (`id` set), or the defaults
    (`is_default`: LOG_RETENTION_DAYS, no max_size_gb, no archive; `id` and the
    timestamps null).

    `cutoff`: rows dated before it are past the policy now. `max_size_bytes`: the
    policy's own size limit in bytes (GiB of 1024³), null without one.
    `global_max_size_gb`: LOG_MAX_SIZE_GB, the deployment's."""

    tenant_id: uuid.UUID
    is_default: bool
    id: uuid.UUID | None
    retention_days: int
    max_size_gb: float | None
    archive_enabled: bool
    archive_path: str | None
    created_at: datetime | None
    updated_at: datetime | None
    cutoff: datetime
    max_size_bytes: int | None
    global_max_size_gb: float


class RetentionRunOut(msgspec.Struct):
    """One janitor run, as it recorded itself (`finished_at` null while it runs, or if
    it stopped midway). `actions` lists what was removed, per tenant and day, and why;
    `errors` what failed (the next run retries)."""

    id: int
    started_at: datetime
    finished_at: datetime | None
    dropped_partitions: int
    deleted_rows: int
    deleted_bytes: int
    archived_rows: int
    archived_bytes: int
    archived_files: int
    actions: list[Any]
    errors: list[Any]


class RetentionStatusOut(msgspec.Struct):
    """The janitor's retention work: the last run, when the next is expected (the last
    start + RETENTION_INTERVAL; null before any run), and a page of runs, newest first
    (`before_id` = the last id seen pages back)."""

    interval_seconds: int
    last_run: RetentionRunOut | None
    next_run_at: datetime | None
    runs: list[RetentionRunOut]
    limit: int
    has_more: bool
