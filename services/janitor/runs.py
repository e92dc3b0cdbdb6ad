"""The record of each retention run in retention_runs (sql/0011_retention.sql), read by
GET /api/v1/retention/status.

A run's row is inserted when it starts (finished_at NULL) and completed when it ends, so
a run in progress, or one whose janitor died, shows as unfinished. Totals are exact; the
`actions` list names each tenant-day removed:

    {"tenant_id", "day": "YYYY-MM-DD", "rows", "bytes",
     "reason": "retention" | "tenant_quota" | "global_quota" | "partition", "archived"}

and `errors` what could not be done this run (it is tried again the next):

    {"stage": "archive" | "delete" | "partition" | "quota" | "run",
     "error", "tenant_id"?, "day"?, "partition"?}

The last KEEP_RUNS runs are kept.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal

import msgspec
import psycopg

KEEP_RUNS = 1000
# A first run on a large backlog can remove tens of thousands of tenant-days; the totals
# count all of them, the list names the first ones.
MAX_LISTED_ACTIONS = 10_000

Reason = Literal["retention", "tenant_quota", "global_quota", "partition"]
Stage = Literal["archive", "delete", "partition", "quota", "run"]


class Action(msgspec.Struct, frozen=True):
    tenant_id: uuid.UUID
    day: date
    rows: int
    bytes: int
    reason: Reason
    archived: bool


class RunError(msgspec.Struct, frozen=True, omit_defaults=True):
    stage: Stage
    error: str
    tenant_id: uuid.UUID | None = None
    day: date | None = None
    partition: str | None = None


@dataclass(slots=True)
class RunRecord:
    started_at: datetime
    id: int | None = None
    finished_at: datetime | None = None
    dropped_partitions: int = 0
    deleted_rows: int = 0
    deleted_bytes: int = 0
    archived_rows: int = 0
    archived_bytes: int = 0
    archived_files: int = 0
    actions: list[Action] = field(default_factory=list)
    unlisted_actions: int = 0
    errors: list[RunError] = field(default_factory=list)

    def add(self, action: Action) -> None:
        self.deleted_rows += action.rows
        self.deleted_bytes += action.bytes
        if len(self.actions) < MAX_LISTED_ACTIONS:
            self.actions.append(action)
        else:
            self.unlisted_actions += 1

    def archived(self, rows: int, size: int) -> None:
        self.archived_rows += rows
        self.archived_bytes += size
        self.archived_files += 1


_encoder = msgspec.json.Encoder()

_FINISH_SQL = """
UPDATE retention_runs SET
    finished_at = %(finished_at)s, dropped_partitions = %(dropped_partitions)s,
    deleted_rows = %(deleted_rows)s, deleted_bytes = %(deleted_bytes)s,
    archived_rows = %(archived_rows)s, archived_bytes = %(archived_bytes)s,
    archived_files = %(archived_files)s, actions = %(actions)s::jsonb, errors = %(errors)s::jsonb
WHERE id = %(id)s
"""


def start_run(conn: psycopg.Connection, started_at: datetime) -> RunRecord:
    row = conn.execute(
        "INSERT INTO retention_runs (started_at) VALUES (%s) RETURNING id", (started_at,)
    ).fetchone()
    assert row is not None
    return RunRecord(started_at=started_at, id=int(row[0]))


def finish_run(conn: psycopg.Connection, record: RunRecord, finished_at: datetime) -> None:
    """Write the run's totals, actions and errors, and forget runs past the last KEEP_RUNS."""
    record.finished_at = finished_at
    errors = list(record.errors)
    if record.unlisted_actions:
        errors.append(
            RunError("run", f"{record.unlisted_actions} more tenant-days removed, not listed")
        )
    conn.execute(
        _FINISH_SQL,
        {
            "id": record.id,
            "finished_at": finished_at,
            "dropped_partitions": record.dropped_partitions,
            "deleted_rows": record.deleted_rows,
            "deleted_bytes": record.deleted_bytes,
            "archived_rows": record.archived_rows,
            "archived_bytes": record.archived_bytes,
            "archived_files": record.archived_files,
            "actions": _encoder.encode(record.actions).decode(),
            "errors": _encoder.encode(errors).decode(),
        },
    )
    conn.execute(
        "DELETE FROM retention_runs WHERE id < "
        "(SELECT id FROM retention_runs ORDER BY id DESC OFFSET %s LIMIT 1)",
        (KEEP_RUNS - 1,),
    )
