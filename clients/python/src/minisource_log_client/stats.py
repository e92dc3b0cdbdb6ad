"""What happened to every record a client was given: counters, never reset."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClientStats:
    """A snapshot of a client's counters (`client.stats()`).

    Every record given to `log()` ends in exactly one of: `sent` (the gateway accepted
    it), `rejected` (the gateway refused it: an invalid entry, or a 4xx answer other
    than 429), `dropped_queue_full` (the overflow policy), `dropped_too_large`,
    `dropped_retries_exhausted`
    (still undelivered after `RetryPolicy.give_up_after`), `dropped_on_close` (still
    queued when `close()` ran out of time), or still in the queue / in flight.
    """

    queued: int = 0
    """Records that entered the queue (dropped_queue_full under drop_new never did)."""
    sent: int = 0
    rejected: int = 0
    dropped_queue_full: int = 0
    dropped_too_large: int = 0
    """Entries larger than max_queue_bytes by themselves."""
    dropped_retries_exhausted: int = 0
    dropped_on_close: int = 0
    batches_sent: int = 0
    """Requests the gateway answered 2xx (a retried batch counts once)."""
    retries: int = 0
    """Requests sent again after a 429, a 5xx or a connection error."""
    queue_records: int = 0
    queue_bytes: int = 0
    queue_records_high: int = 0
    """The most records ever held in the queue at once (never above max_queue_records)."""
    queue_bytes_high: int = 0
    """The most bytes of encoded entries ever held at once (never above max_queue_bytes)."""
    in_flight: int = 0
    """Records of the batch being sent (taken off the queue, not yet settled)."""

    @property
    def dropped(self) -> int:
        return (
            self.dropped_queue_full
            + self.dropped_too_large
            + self.dropped_retries_exhausted
            + self.dropped_on_close
        )
