"""One retention run: the policies applied, then the size quotas, recorded in
retention_runs.

In order, on one autocommit connection holding the janitor lock:

1. Whole partitions whose range ends at or before the cutoff of the longest retention
   in force (max of LOG_RETENTION_DAYS and every policy) are past every tenant's window:
   each tenant-day in one whose tenant archives is archived, the partition's log_counts
   minutes are deleted (the DELETE trigger takes them out of the coarser rollups), and
   the partition is detached concurrently and dropped (services/janitor/partitions.py).
   A partition detached by an interrupted run is finished first.
2. Every tenant's rows older than its own cutoff (shared/retention.py), oldest day
   first, are deleted in bounded batches with their rollup cells
   (services/janitor/removal.py): a tenant keeps exactly its window. For most tenants
   step 1 has already removed everything; this catches shorter policies, monthly
   partitions, and days whose partition could not be dropped.
3. A tenant over its max_size_gb loses its oldest closed days until it is under; then,
   while all tenants together are over LOG_MAX_SIZE_GB, the oldest closed tenant-day
   across tenants goes, the largest first among the same day (services/janitor/quotas.py).
   A quota may thus remove data younger than the retention window.

Before any tenant-day of a tenant whose policy archives is removed, it is archived
(services/janitor/archive.py); rows are deleted only after the archive returned. An
archive that fails leaves that tenant's data in place for the run, and the error is
recorded. Nothing dated at or after a tenant's cutoff is removed by retention, however
far ahead of the clock its timestamps are: times are the rows' own, compared with a
cutoff computed from the run's clock, `now`, which callers pass (tests drive time with it).
"""

from __future__ import annotations

import logging
import pathlib
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import psycopg

from services.janitor import metrics
from services.janitor.archive import ArchiveResult, archive_tenant_day
from services.janitor.lock import janitor_lock
from services.janitor.pacing import Pace
from services.janitor.partitions import (
    Partition,
    detach_and_drop,
    drop_table,
    leftovers,
    list_partitions,
    rows_per_tenant_day,
)
from services.janitor.policies import Policies, load_policies, tenants_with_logs
from services.janitor.quotas import global_plan, tenant_plan, usage_by_day
from services.janitor.removal import (
    DAY,
    clear_leftover_cells,
    count_rows,
    day_start,
    delete_counts,
    delete_tenant_day,
)
from services.janitor.runs import (
    Action,
    Reason,
    RunError,
    RunRecord,
    Stage,
    finish_run,
    start_run,
)
from shared.retention import GIB, check_archive_path
from shared.settings import Settings

log = logging.getLogger("janitor.retention")

Archiver = Callable[[psycopg.Connection, pathlib.Path, str, uuid.UUID, date, Pace], ArchiveResult]
KeepGoing = Callable[[], bool]

# Before any row: the lower bound of "everything older than the cutoff".
_BEGINNING = datetime(1, 1, 1, tzinfo=UTC)

_OLDEST_SQL = """
SELECT "timestamp" FROM log_entries
WHERE tenant_id = %s AND "timestamp" < %s
ORDER BY "timestamp" LIMIT 1
"""


class _Stopped(Exception):
    """`keep_going` said no: the run ends here, the next one continues."""


class RetentionRun:
    """The state of one run: the policies and tenants read at its start, what it did."""

    def __init__(
        self,
        conn: psycopg.Connection,
        settings: Settings,
        now: datetime,
        archiver: Archiver,
        keep_going: KeepGoing,
        record: RunRecord,
    ) -> None:
        self.conn = conn
        self.settings = settings
        self.now = now
        self.today = now.astimezone(UTC).date()
        self.archiver = archiver
        self.keep_going = keep_going
        self.pace = Pace(settings.retention_pause_ratio)
        self.policies: Policies = load_policies(conn, settings)
        self.tenants = tenants_with_logs(conn)
        self.record = record
        # Tenants whose archive or delete failed this run: left alone until the next.
        self.held_back: set[uuid.UUID] = set()

    # -- steps ------------------------------------------------------------------------

    def drop_partitions(self) -> None:
        drop_before = self.policies.drop_before(self.now)
        for table in leftovers(self.conn):
            if table.end <= drop_before:
                self._clear_range(table)
                drop_table(self.conn, table.name)
                self._dropped(table)
            else:
                # Only retention detaches, and only past every window: a policy lengthened
                # since. Its rollups are gone; an operator may re-attach it.
                self._error(
                    "partition",
                    "detached partition inside a retention window left in place",
                    partition=table.name,
                )
        for partition in list_partitions(self.conn):
            if partition.end > drop_before:
                break
            self._check()
            # Kept when it cannot go: then the other tenants' rows in it are deleted row
            # by row (step 2), so that each of them still keeps exactly its window.
            self._drop_partition(partition)

    def _drop_partition(self, partition: Partition) -> bool:
        contents = [] if partition.detach_pending else rows_per_tenant_day(self.conn, partition)
        archived: set[tuple[uuid.UUID, date]] = set()
        for held in contents:
            if self.policies.of(held.tenant_id).archive_enabled:
                if held.tenant_id in self.held_back or not self._archive(held.tenant_id, held.day):
                    return False
                archived.add((held.tenant_id, held.day))
        actions = []
        for held in contents:
            start = day_start(held.day)
            size = delete_counts(
                self.conn, held.tenant_id, start, start + DAY, self.settings.retention_delete_batch
            )
            archive = (held.tenant_id, held.day) in archived
            actions.append(Action(held.tenant_id, held.day, held.rows, size, "partition", archive))
        self._clear_range(partition)
        try:
            detach_and_drop(self.conn, partition)
        except psycopg.Error as exc:
            if self.conn.broken:
                raise
            self._error("partition", str(exc), partition=partition.name)
            return False
        for action in actions:
            self._removed(action)
        self._dropped(partition)
        return True

    def _clear_range(self, partition: Partition) -> None:
        """Rollup cells of every tenant in the partition's range: those of rows it holds
        were deleted per tenant-day; these are any left without rows."""
        for tenant in self.tenants:
            delete_counts(
                self.conn,
                tenant,
                partition.start,
                partition.end,
                self.settings.retention_delete_batch,
            )
            clear_leftover_cells(self.conn, tenant, partition.start, partition.end)

    def apply_retention(self) -> None:
        for tenant in self.tenants:
            if tenant in self.held_back:
                continue
            cutoff = self.policies.of(tenant).cutoff(self.now)
            done: date | None = None
            while True:
                self._check()
                row = self.conn.execute(_OLDEST_SQL, (tenant, cutoff), prepare=False).fetchone()
                if row is None:
                    break
                day = row[0].astimezone(UTC).date()
                if day == done:
                    # Removed, yet rows are still there (written meanwhile): never loop.
                    self._error("delete", "rows of the day remain after its removal", tenant, day)
                    break
                if not self._remove_day(tenant, day, "retention"):
                    break
                done = day
            if tenant not in self.held_back:
                # Minutes whose rows are gone already (a partition an older version dropped,
                # rows deleted by hand): what stats count must be what remains.
                delete_counts(
                    self.conn, tenant, _BEGINNING, cutoff, self.settings.retention_delete_batch
                )
                clear_leftover_cells(self.conn, tenant, _BEGINNING, cutoff)

    def enforce_tenant_quotas(self) -> None:
        for tenant, policy in sorted(self.policies.own.items()):
            quota = policy.max_size_bytes()
            if quota is None or tenant in self.held_back:
                continue
            days = usage_by_day(self.conn, tenant)
            for usage in tenant_plan(days, quota, self.today):
                self._check()
                if not self._remove_day(tenant, usage.day, "tenant_quota"):
                    break
            self._note_unmet(tenant, quota, "max_size_gb")

    def enforce_global_quota(self) -> None:
        quota = int(self.settings.log_max_size_gb * GIB)
        usage = {t: usage_by_day(self.conn, t) for t in tenants_with_logs(self.conn)}
        for day in global_plan(usage, quota, self.today):
            self._check()
            # Oldest first across tenants: if this tenant-day cannot go, removing newer
            # data of others instead would break the order; the next run tries again.
            if not self._remove_day(day.tenant_id, day.day, "global_quota"):
                break
        self._note_unmet(None, quota, "LOG_MAX_SIZE_GB")

    # -- one tenant-day ---------------------------------------------------------------

    def _remove_day(self, tenant: uuid.UUID, day: date, reason: Reason) -> bool:
        """Archive (when the tenant's policy says so), then delete, the tenant's rows of
        `day`. False when it could not: the tenant is then left alone for this run."""
        if tenant in self.held_back:
            return False
        archived = False
        if self.policies.of(tenant).archive_enabled and count_rows(self.conn, tenant, day):
            if not self._archive(tenant, day):
                return False
            archived = True
        try:
            deleted = delete_tenant_day(
                self.conn,
                tenant,
                day,
                self.settings.retention_delete_batch,
                self.keep_going,
                self.pace,
            )
        except psycopg.Error as exc:
            if self.conn.broken:
                raise
            self._error("delete", str(exc), tenant, day)
            self.held_back.add(tenant)
            return False
        if deleted.rows or deleted.bytes:
            self._removed(Action(tenant, day, deleted.rows, deleted.bytes, reason, archived))
        if not deleted.complete:
            raise _Stopped
        return True

    def _archive(self, tenant: uuid.UUID, day: date) -> bool:
        policy = self.policies.of(tenant)
        try:
            # Checked again here: a row written around the API must not name a path
            # outside ARCHIVE_ROOT either.
            path = check_archive_path(policy.archive_path, archive_enabled=True)
            assert path is not None
            result = self.archiver(
                self.conn, pathlib.Path(self.settings.archive_root), path, tenant, day, self.pace
            )
            # Rows written to the day while it was archived would be deleted unarchived.
            present = count_rows(self.conn, tenant, day)
            if present > result.rows:
                raise RuntimeError(
                    f"the archive holds {result.rows} rows, the day now {present}: "
                    "rows arrived while it was written"
                )
        except Exception as exc:  # whatever the archive raises, nothing is deleted
            if self.conn.broken:
                raise
            self._error("archive", str(exc) or type(exc).__name__, tenant, day)
            self.held_back.add(tenant)
            return False
        self.record.archived(result.rows, result.bytes)
        metrics.ARCHIVED_ROWS.inc(result.rows)
        metrics.ARCHIVED_BYTES.inc(result.bytes)
        metrics.ARCHIVE_FILES.inc()
        log.info(
            "retention archived a tenant-day",
            extra={
                "fields": {
                    "tenant_id": str(tenant),
                    "day": day.isoformat(),
                    "rows": result.rows,
                    "bytes": result.bytes,
                    "path": str(result.path),
                }
            },
        )
        return True

    # -- bookkeeping ------------------------------------------------------------------

    def _check(self) -> None:
        if not self.keep_going():
            raise _Stopped

    def _removed(self, action: Action) -> None:
        self.record.add(action)
        metrics.DELETED_ROWS.labels(action.reason).inc(action.rows)
        metrics.DELETED_BYTES.labels(action.reason).inc(action.bytes)
        log.info(
            "retention removed a tenant-day",
            extra={
                "fields": {
                    "tenant_id": str(action.tenant_id),
                    "day": action.day.isoformat(),
                    "rows": action.rows,
                    "bytes": action.bytes,
                    "reason": action.reason,
                    "archived": action.archived,
                }
            },
        )

    def _dropped(self, partition: Partition) -> None:
        self.record.dropped_partitions += 1
        metrics.DROPPED_PARTITIONS.inc()
        log.info(
            "retention dropped a partition",
            extra={
                "fields": {
                    "partition": partition.name,
                    "start": partition.start.isoformat(),
                    "end": partition.end.isoformat(),
                    "reason": "partition",
                }
            },
        )

    def _error(
        self,
        stage: Stage,
        error: str,
        tenant: uuid.UUID | None = None,
        day: date | None = None,
        partition: str | None = None,
    ) -> None:
        self.record.errors.append(RunError(stage, error, tenant, day, partition))
        metrics.ERRORS.labels(stage).inc()
        log.warning(
            "retention could not %s",
            stage,
            extra={
                "fields": {
                    "error": error,
                    "tenant_id": tenant and str(tenant),
                    "day": day and day.isoformat(),
                    "partition": partition,
                }
            },
        )

    def _note_unmet(self, tenant: uuid.UUID | None, quota: int, which: str) -> None:
        """A quota still exceeded after the run (the open day alone is over it, or a
        removal failed) is said in the status: nothing else would show it."""
        if tenant is None:
            used = sum(
                d.bytes for t in tenants_with_logs(self.conn) for d in usage_by_day(self.conn, t)
            )
        else:
            used = sum(d.bytes for d in usage_by_day(self.conn, tenant))
        if used > quota:
            self._error("quota", f"{used} bytes stored, {which} allows {quota}", tenant)


def apply_retention(
    conn: psycopg.Connection,
    settings: Settings,
    now: datetime,
    *,
    archiver: Archiver = archive_tenant_day,
    keep_going: KeepGoing = lambda: True,
) -> RunRecord:
    """One run on `conn` (autocommit), which must hold the janitor lock; recorded in
    retention_runs. `keep_going` is asked between steps and delete batches: when it says
    no, the run ends early and records so (SIGTERM, or the run's time budget)."""
    started = time.monotonic()
    record = start_run(conn, now)
    try:
        run = RetentionRun(conn, settings, now, archiver, keep_going, record)
        run.drop_partitions()
        run.apply_retention()
        run.enforce_tenant_quotas()
        run.enforce_global_quota()
    except _Stopped:
        record.errors.append(RunError("run", "stopped before finishing; the next run continues"))
        metrics.ERRORS.labels("run").inc()
    except Exception as exc:
        record.errors.append(RunError("run", str(exc) or type(exc).__name__))
        metrics.ERRORS.labels("run").inc()
        raise
    finally:
        if not conn.broken:
            finish_run(conn, record, now + timedelta(seconds=time.monotonic() - started))
    # One line per run that did something: a quiet run is not a state change.
    done = record.actions or record.dropped_partitions or record.errors
    log.log(
        logging.INFO if done else logging.DEBUG,
        "retention run finished",
        extra={
            "fields": {
                "dropped_partitions": record.dropped_partitions,
                "deleted_rows": record.deleted_rows,
                "deleted_bytes": record.deleted_bytes,
                "archived_files": record.archived_files,
                "errors": len(record.errors),
            }
        },
    )
    return record


def retention_once(
    settings: Settings,
    now: datetime | None = None,
    *,
    archiver: Archiver = archive_tenant_day,
    keep_going: KeepGoing = lambda: True,
) -> RunRecord | None:
    """A run if this janitor holds the lock; None when another one does (it acts)."""
    with (
        psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn,
        janitor_lock(conn) as held,
    ):
        if not held:
            return None
        return apply_retention(
            conn, settings, now or datetime.now(UTC), archiver=archiver, keep_going=keep_going
        )
