"""One evaluation round: every enabled rule, once for the tick `now` falls in.

A plain async function of its dependencies and `now`, independent of arq (ARCHITECTURE
pitfall 12): the cron job calls it with the wall clock, tests with the time they want.

The round reads the committed watermark once (shared/streams.py): every rule's window
ends there, never at `now`, so entries accepted but not yet stored (a backlog) can
neither fire nor resolve anything (pitfall 9); they are counted once they are stored.
Then it claims rules in batches (services/evaluator/claims.py) and evaluates each
claimed batch concurrently, on a few connections: count as the tenant, then decide and
write in one transaction (services/evaluator/outcome.py).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.evaluator.claims import claim_rules
from services.evaluator.counting import count_window
from services.evaluator.outcome import (
    Observation,
    Outcome,
    RecordedChange,
    record_failure,
    store_outcome,
)
from services.evaluator.schedule import tick_of
from shared.alerts import AlertRule, Window
from shared.errors import ValidationFailed
from shared.kept_hours import KeptHours
from shared.redis_keys import RedisKeys
from shared.settings import Settings
from shared.streams import committed_watermark
from shared.tracing import tracer

log = logging.getLogger("evaluator")

CLAIM_BATCH = 100
# Rules counted at once by one round: enough to overlap round trips, few enough to
# leave the pool to the sender and PostgreSQL to the API.
MAX_CONCURRENCY = 4


@dataclass
class RoundDeps:
    """What a round needs. `failing` is the process's memory of rules whose last count
    failed, so that a rule failing every tick is logged when it starts and when it
    recovers, not at every tick."""

    settings: Settings
    pool: AsyncConnectionPool
    redis: Redis
    keys: RedisKeys
    concurrency: int = MAX_CONCURRENCY
    claim_batch: int = CLAIM_BATCH
    # Rules with a search over hours reuse the hours counted before (shared/kept_hours.py).
    kept_hours: KeptHours | None = None
    failing: set[uuid.UUID] = field(default_factory=set)

    @property
    def public_url(self) -> str:
        return self.settings.public_base_url


@dataclass
class RoundReport:
    """What a round did: the rules it evaluated (claimed and written), the changes it
    recorded, the rules whose evaluation was dropped (disabled, deleted or changed
    meanwhile) and those whose count failed."""

    tick: int
    watermark: datetime
    evaluated: list[uuid.UUID] = field(default_factory=list)
    changes: list[RecordedChange] = field(default_factory=list)
    skipped: list[uuid.UUID] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)


# Errors of the environment, not of a rule: they end the round (the next tick retries
# every rule it did not write).
UNAVAILABLE = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    PoolTimeout,
    RedisError,
    OSError,
    TimeoutError,
)
# SQLSTATE classes of a server going away or out of resources: connection exception,
# insufficient resources, system error, and 57P* (shutting down, cannot connect now).
_SERVER_UNAVAILABLE = ("08", "53", "58", "57P")


def _is_unavailable(exc: BaseException) -> bool:
    """True for the environment's errors. When the server answered with an error of the
    statement (cancelled by statement_timeout, a deadlock), it is the rule's."""
    if isinstance(exc, psycopg.Error) and exc.sqlstate:
        return exc.sqlstate.startswith(_SERVER_UNAVAILABLE)
    return isinstance(exc, UNAVAILABLE)


async def evaluate_round(deps: RoundDeps, now: datetime) -> RoundReport:
    """Evaluate every enabled rule not yet evaluated for the tick of `now`. Raises when
    PostgreSQL or Redis is unavailable (what was written so far stays written).

    Traced (README, "Tracing") as one `alert evaluation round` span, with one
    `alert evaluation` span per rule inside it."""
    with tracer(__name__).start_as_current_span("alert evaluation round") as span:
        report = await _evaluate_round(deps, now)
        if span.is_recording():
            span.set_attributes(
                {
                    "minisource.alert.tick": report.tick,
                    "minisource.alert.evaluated": len(report.evaluated),
                    "minisource.alert.changes": len(report.changes),
                    "minisource.alert.skipped": len(report.skipped),
                    "minisource.alert.failed": len(report.failed),
                }
            )
        return report


async def _evaluate_round(deps: RoundDeps, now: datetime) -> RoundReport:
    tick = tick_of(now, deps.settings.alert_eval_interval_seconds)
    watermark = await committed_watermark(deps.redis, deps.keys, now)
    report = RoundReport(tick, watermark)
    limit = asyncio.Semaphore(max(1, deps.concurrency))
    while True:
        async with deps.pool.connection() as conn:
            claim = await claim_rules(conn, tick, deps.claim_batch)
        if not claim:
            return report
        for rule_id, tenant_id, problem in claim.unreadable:
            await _failed(
                deps, rule_id, tenant_id, tick, now, f"the stored rule is invalid: {problem}"
            )
            report.failed.append(rule_id)
        try:
            async with asyncio.TaskGroup() as batch:
                for rule in claim.rules:
                    batch.create_task(
                        _evaluate_rule(deps, rule, tick, now, watermark, report, limit)
                    )
        except ExceptionGroup as group:
            # Only the environment's errors get here (a rule's own are recorded on it):
            # one of them says enough.
            raise group.exceptions[0] from None


async def _evaluate_rule(
    deps: RoundDeps,
    rule: AlertRule,
    tick: int,
    now: datetime,
    watermark: datetime,
    report: RoundReport,
    limit: asyncio.Semaphore,
) -> None:
    async with limit:
        with tracer(__name__).start_as_current_span(
            "alert evaluation",
            attributes={
                "minisource.alert_id": str(rule.id),
                "minisource.tenant_id": str(rule.tenant_id),
            },
        ):
            await _evaluate_claimed(deps, rule, tick, now, watermark, report)


async def _evaluate_claimed(
    deps: RoundDeps,
    rule: AlertRule,
    tick: int,
    now: datetime,
    watermark: datetime,
    report: RoundReport,
) -> None:
    window = Window.ending_at(watermark, rule.window_mins)
    try:
        counted = await count_window(
            deps.pool, rule, window, deps.settings.query_timeout_ms, deps.kept_hours
        )
        async with deps.pool.connection() as conn:
            outcome = await store_outcome(
                conn, rule, Observation(counted, watermark, now, tick), deps.public_url
            )
    except Exception as exc:
        if _is_unavailable(exc):
            raise
        await _failed(deps, rule.id, rule.tenant_id, tick, now, _problem(deps, exc), exc)
        report.failed.append(rule.id)
        return
    _recovered(deps, rule)
    _report(report, outcome)


def _report(report: RoundReport, outcome: Outcome) -> None:
    rule = outcome.rule
    if outcome.skipped:
        report.skipped.append(rule.id)
        log.debug("evaluation of alert %s dropped: %s", rule.id, outcome.skipped)
        return
    report.evaluated.append(rule.id)
    report.changes.extend(outcome.changes)
    for change in outcome.changes:
        log.info(
            "alert %s %s",
            rule.name,
            change.kind,
            extra={
                "fields": {
                    "event": f"alert_{change.kind}",
                    "tenant_id": str(rule.tenant_id),
                    "alert_id": str(rule.id),
                    "event_id": str(change.event_id),
                    "group": change.group,
                    "count": change.count,
                    "threshold": rule.threshold,
                    "condition": rule.condition,
                    "window_mins": rule.window_mins,
                    **({"reason": change.reason} if change.reason else {}),
                }
            },
        )


def _problem(deps: RoundDeps, exc: Exception) -> str:
    """What the rule's reader is told (the details go to the evaluator's log)."""
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return (
            f"counting took longer than {deps.settings.query_timeout_ms} ms; "
            "narrow the filter or shorten the window"
        )
    if isinstance(exc, ValidationFailed):
        reasons = "; ".join(f"{e.field}: {e.reason}" for e in exc.errors) or exc.detail
        return f"the stored filter is invalid: {reasons}"
    return f"the rule could not be evaluated ({type(exc).__name__})"


async def _failed(
    deps: RoundDeps,
    rule_id: uuid.UUID,
    tenant_id: uuid.UUID,
    tick: int,
    now: datetime,
    problem: str,
    cause: Exception | None = None,
) -> None:
    """Record that the rule could not be evaluated this tick; log it (with the cause's
    traceback) when it starts failing, not at every tick."""
    if rule_id not in deps.failing:
        deps.failing.add(rule_id)
        log.warning(
            "alert %s cannot be evaluated: %s",
            rule_id,
            problem,
            exc_info=cause,
            extra={"fields": {"tenant_id": str(tenant_id), "alert_id": str(rule_id)}},
        )
    async with deps.pool.connection() as conn:
        await record_failure(conn, rule_id, tenant_id, tick, now, problem)


def _recovered(deps: RoundDeps, rule: AlertRule) -> None:
    if rule.id in deps.failing:
        deps.failing.discard(rule.id)
        log.info(
            "alert %s evaluated again",
            rule.name,
            extra={"fields": {"tenant_id": str(rule.tenant_id), "alert_id": str(rule.id)}},
        )
