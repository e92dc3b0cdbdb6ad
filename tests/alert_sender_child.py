"""`python -m tests.alert_sender_child`: a notification sender alone in a process
(settings from the environment, its lease from TEST_SENDER_LEASE_SECONDS), for tests
that SIGKILL it mid-send."""

from __future__ import annotations

import asyncio
import os

from services.evaluator.delivery import DeliveryPolicy
from services.evaluator.sender import run_sender
from shared.db import make_pool
from shared.lifecycle import stop_on_signals
from shared.settings import Settings


async def main(lease_seconds: float) -> None:
    settings = Settings.from_env()
    stop = stop_on_signals()
    pool = make_pool(settings, name="sender-child", min_size=0, max_size=2)
    await pool.open()
    policy = DeliveryPolicy(
        max_attempts=settings.alert_max_attempts, lease_seconds=lease_seconds, poll_seconds=0.05
    )
    try:
        await run_sender(settings, pool, stop, asyncio.Event(), policy=policy)
    finally:
        await pool.close()


if __name__ == "__main__":
    asyncio.run(main(float(os.environ["TEST_SENDER_LEASE_SECONDS"])))
