"""`python -m tests.archive_child ROOT ARCHIVE_PATH TENANT DAY`: one archive_tenant_day
call alone in a process (settings from the environment), for the crash tests: with
MINISOURCE_FAILPOINT set, the process SIGKILLs itself at that step."""

from __future__ import annotations

import sys
import uuid
from datetime import date
from pathlib import Path

import psycopg

from services.janitor.archive import archive_tenant_day, encode_result
from shared.settings import Settings


def main(root: str, archive_path: str, tenant: str, day: str) -> None:
    settings = Settings.from_env()
    with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as conn:
        result = archive_tenant_day(
            conn, Path(root), archive_path, uuid.UUID(tenant), date.fromisoformat(day)
        )
    sys.stdout.buffer.write(encode_result(result) + b"\n")


if __name__ == "__main__":
    main(*sys.argv[1:5])
