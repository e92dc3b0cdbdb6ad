"""`python -m services.evaluator`: the alert evaluator's process.

Alert rules, their evaluation and notifications arrive with the alerting issue; until
then this process only holds its place in the deployment: it starts, applies the
migrations (as every process does), says it has no rules to evaluate, and stops cleanly
on SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging

from shared.lifecycle import stop_on_signals
from shared.logsetup import start_process
from shared.migrate import migrate_when_reachable
from shared.settings import Settings

log = logging.getLogger("evaluator")


async def run(settings: Settings) -> None:
    stop = stop_on_signals()
    if await migrate_when_reachable(settings, stop) is None:
        return
    log.info("evaluator started (idle: alert evaluation is not part of this version)")
    await stop.wait()
    log.info("evaluator stopped")


def main() -> None:
    settings = start_process("evaluator")
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
