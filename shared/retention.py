"""Retention policies: their shape and validation, the policy in force for a tenant, and
where a policy cuts.

Used by the gateway (the policies API) and the janitor (which applies them). A policy
keeps `retention_days` whole UTC days before today's, plus today: rows older than the
cutoff (midnight UTC, `retention_days` days before today's midnight) are removed. Times
are the rows' own timestamps, so an entry dated ahead of the clock is kept like a new
one; nothing younger than the cutoff is ever removed, whatever the clock skew of
ingested timestamps. A tenant without a policy has the defaults (LOG_RETENTION_DAYS,
LOG_MAX_SIZE_GB, no archive).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

import msgspec

from shared.errors import FieldError, ValidationFailed
from shared.settings import Settings

MAX_RETENTION_DAYS = 3650
GIB = 1024**3
# A name under ARCHIVE_ROOT: segments of letters, digits, '.', '_' and '-', separated by
# '/', none of them '.' or '..'; never absolute. Matched with fullmatch: `$` alone would
# also accept a trailing newline.
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")
MAX_ARCHIVE_PATH = 200


class RetentionPolicyIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A policy as a client creates or replaces it. `tenant_id` is the caller's own when
    absent (only the admin key may name another tenant)."""

    retention_days: Annotated[int, msgspec.Meta(ge=1, le=MAX_RETENTION_DAYS)]
    max_size_gb: Annotated[float, msgspec.Meta(gt=0, le=1_000_000)] | None = None
    archive_enabled: bool = False
    archive_path: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ARCHIVE_PATH)] | None = (
        None
    )
    tenant_id: uuid.UUID | None = None


def check_archive_path(path: str | None, archive_enabled: bool) -> str | None:
    """The archive path, checked: a relative name under ARCHIVE_ROOT (no '..', not
    absolute), required when archiving is on. Raises ValidationFailed naming it."""
    if path is None:
        if archive_enabled:
            raise ValidationFailed(
                "archiving needs an archive_path",
                errors=[FieldError("archive_path", "required when archive_enabled is true")],
            )
        return None
    segments = path.split("/")
    if path.startswith("/") or not all(_SEGMENT.fullmatch(s) for s in segments):
        raise ValidationFailed(
            "archive_path must be a relative name under ARCHIVE_ROOT",
            errors=[
                FieldError(
                    "archive_path",
                    "segments of letters, digits, '.', '_', '-' separated by '/'; "
                    "no '..', not absolute",
                )
            ],
        )
    return path


@dataclass(frozen=True, slots=True)
class EffectivePolicy:
    """The policy in force for a tenant: its own, or the defaults (`is_default`)."""

    tenant_id: uuid.UUID
    retention_days: int
    max_size_gb: float | None
    archive_enabled: bool
    archive_path: str | None
    is_default: bool

    @classmethod
    def default(cls, tenant_id: uuid.UUID, settings: Settings) -> EffectivePolicy:
        return cls(tenant_id, settings.log_retention_days, None, False, None, True)

    def cutoff(self, now: datetime) -> datetime:
        return retention_cutoff(now, self.retention_days)

    def max_size_bytes(self) -> int | None:
        return int(self.max_size_gb * GIB) if self.max_size_gb is not None else None


def retention_cutoff(now: datetime, retention_days: int) -> datetime:
    """Rows dated before this are past a `retention_days` policy at `now`."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=retention_days)
