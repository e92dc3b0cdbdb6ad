"""The decision after each answer to a batch, shared by the thread and asyncio senders:
which counter its records end in, or how long to wait before sending it again."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from minisource_log_client.diagnostics import Throttled
from minisource_log_client.retry import Action, RetryPolicy
from minisource_log_client.transport import Batch, accepted_counts, first_error


@dataclass(slots=True)
class Step:
    outcomes: dict[str, int] = field(default_factory=dict)
    """Set when the batch's records reached an end: counter name → records."""
    retry_in: float | None = None
    split: list[Batch] = field(default_factory=list)


def next_step(
    policy: RetryPolicy,
    batch: Batch,
    status: int | None,
    retry_after: str | None,
    body: bytes,
    warn: Throttled,
) -> Step:
    records = len(batch.entries)
    decision = policy.decide(status, retry_after, batch.attempts, records)
    batch.attempts += 1
    if decision.action is Action.DONE:
        accepted, rejected = accepted_counts(body, records)
        if rejected:
            warn.warning(
                "rejected",
                "minisource: the gateway refused %d of %d entries (%s)",
                rejected,
                records,
                first_error(body),
            )
        return Step(outcomes={"sent": accepted, "rejected": rejected, "batches_sent": 1})
    if decision.action is Action.SPLIT:
        return Step(split=batch.halves())
    if decision.action is Action.REJECT:
        warn.warning(
            f"status-{status}",
            "minisource: the gateway answered %s to a batch of %d entries; not retried: %s",
            status,
            records,
            first_error(body),
        )
        return Step(outcomes={"rejected": records})
    give_up = policy.give_up_after
    if give_up is not None and time.monotonic() + decision.delay - batch.started > give_up:
        warn.warning(
            "gave-up",
            "minisource: dropped a batch of %d entries after %d attempts over %.0f s (last: %s)",
            records,
            batch.attempts,
            give_up,
            status or "no answer",
        )
        return Step(outcomes={"dropped_retries_exhausted": records})
    warn.warning(
        "retrying",
        "minisource: the gateway answered %s; retrying batches (next in %.1f s)",
        status or "nothing",
        decision.delay,
    )
    return Step(retry_in=decision.delay)
