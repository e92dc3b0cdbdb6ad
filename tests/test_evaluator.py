"""The alert evaluator against real PostgreSQL, Redis and the writer: one event per state
change (with one outbox row per channel), windows that end at the committed watermark,
claims that let several evaluators share a tick, and the process itself.

Rounds are driven with an explicit `now` (evaluate_round(deps, now)): entries are stamped
two hours back and the clock is moved by choosing `now`, so no test sleeps for time to
pass. Only the backlog test (the watermark is wall-clock time) and the process tests
(ALERT_EVAL_INTERVAL=1) use the real clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from services.evaluator.claims import claim_rules
from services.evaluator.counting import count_window
from services.evaluator.outcome import Observation, store_outcome
from services.evaluator.rounds import RoundDeps, RoundReport, evaluate_round
from services.evaluator.schedule import tick_of
from services.writer.consumer import StreamConsumer
from services.writer.loop import Writer
from shared.alerts import Window
from shared.db import make_pool
from shared.redis_conn import make_redis
from shared.redis_keys import RedisKeys
from shared.settings import Settings
from tests.conftest import OTHER_TENANT, TENANT, tenant_headers
from tests.polling import wait_until
from tests.private_services import PrivatePostgres, private_redis
from tests.processes import Service, service_env

INTERVAL = 30  # the settings' default ALERT_EVAL_INTERVAL
CHANNELS = [
    {"type": "webhook", "url": "http://127.0.0.1:9/hook", "secret": "s" * 32},
    {"type": "slack", "url": "http://127.0.0.1:9/slack"},
]


# ---- helpers ------------------------------------------------------------------------


def minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


@pytest.fixture
def base() -> datetime:
    """A whole minute two hours back: entries are stamped around it, rounds run at it."""
    return minute(datetime.now(UTC)) - timedelta(hours=2)


def add_rule(
    db: psycopg.Connection,
    *,
    tenant: uuid.UUID = TENANT,
    name: str = "errors",
    filter: dict[str, Any] | None = None,
    condition: str = "above",
    threshold: int = 5,
    window_mins: int = 5,
    group_by: tuple[str, ...] = (),
    cooldown_mins: int = 0,
    enabled: bool = True,
    channels: list[dict[str, Any]] | None = None,
) -> uuid.UUID:
    """A rule as the API stores it (the API has its own tests)."""
    rule_id = uuid.uuid4()
    db.execute(
        "INSERT INTO log_alerts (id, tenant_id, name, filter, condition, threshold, "
        "window_mins, channels, group_by, cooldown_mins, enabled) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            rule_id,
            tenant,
            name,
            Jsonb(filter if filter is not None else {"min_level": "ERROR"}),
            condition,
            threshold,
            window_mins,
            Jsonb(CHANNELS if channels is None else channels),
            list(group_by),
            cooldown_mins,
            enabled,
        ),
    )
    return rule_id


def entries(
    service: str, at: datetime, n: int, level: str = "ERROR", message: str = "boom"
) -> list[dict[str, Any]]:
    """`n` entries of `service`, a second apart from `at`."""
    return [
        {
            "service_name": service,
            "level": level,
            "message": f"{message} {i}",
            "timestamp": (at + timedelta(seconds=i)).isoformat(),
        }
        for i in range(n)
    ]


async def accept(client: Any, batch: list[dict[str, Any]], tenant: uuid.UUID = TENANT) -> None:
    response = await client.post(
        "/api/v1/logs/batch", json={"entries": batch}, headers=tenant_headers(tenant)
    )
    assert response.status_code == 202, response.text


async def store(writer: Writer) -> None:
    """Store everything accepted and trim the acknowledged messages (the writer trims at
    most once a second), so the committed watermark is `now` again."""
    await writer.drain()
    redis = make_redis(writer.settings)
    try:
        keys = RedisKeys.from_settings(writer.settings)
        await StreamConsumer(redis, keys, "test-trim", 60_000).trim_acknowledged()
    finally:
        await redis.aclose()


async def ingest(client: Any, writer: Writer, *batches: list[dict[str, Any]]) -> None:
    for batch in batches:
        await accept(client, batch)
    await store(writer)


def events(db: psycopg.Connection, rule_id: uuid.UUID) -> list[dict[str, Any]]:
    cur = db.execute(
        "SELECT id, kind, group_key, observed_count, window_start, window_end, started_at, "
        "resolved_at, reason FROM alert_events WHERE alert_id = %s ORDER BY created_at, kind",
        (rule_id,),
    )
    names = [c.name for c in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def kinds(db: psycopg.Connection, rule_id: uuid.UUID) -> list[str]:
    return [e["kind"] for e in events(db, rule_id)]


def outbox(db: psycopg.Connection, event_id: uuid.UUID) -> list[tuple[int, str, str]]:
    """(channel index, channel type, payload status) of an event's notifications."""
    rows = db.execute(
        "SELECT channel_index, channel->>'type', payload->>'status' FROM alert_notifications "
        "WHERE event_id = %s ORDER BY channel_index",
        (event_id,),
    ).fetchall()
    return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]


def states(db: psycopg.Connection, rule_id: uuid.UUID) -> dict[str, tuple[str, int]]:
    """Group (as text, keys sorted) → (state, last count)."""
    rows = db.execute(
        "SELECT group_key::text, state, last_count FROM alert_states WHERE alert_id = %s",
        (rule_id,),
    ).fetchall()
    return {r[0]: (r[1], int(r[2])) for r in rows}


def rule_row(db: psycopg.Connection, rule_id: uuid.UUID) -> dict[str, Any]:
    cur = db.execute(
        "SELECT evaluated_tick, last_evaluation, last_triggered FROM log_alerts WHERE id = %s",
        (rule_id,),
    )
    row = cur.fetchone()
    assert row is not None
    return {"evaluated_tick": row[0], "last_evaluation": row[1], "last_triggered": row[2]}


@contextlib.asynccontextmanager
async def round_deps(settings: Settings, **changes: Any) -> AsyncIterator[RoundDeps]:
    """What an evaluator process gives its rounds: its own pool and Redis client."""
    pool = make_pool(settings, name="evaluator-test", min_size=0, max_size=4)
    await pool.open()
    redis = make_redis(settings)
    try:
        yield replace(
            RoundDeps(settings, pool, redis, RedisKeys.from_settings(settings)), **changes
        )
    finally:
        await redis.aclose()
        await pool.close()


@pytest.fixture
async def deps(settings: Settings) -> AsyncIterator[RoundDeps]:
    async with round_deps(settings) as made:
        yield made


def changes_of(report: RoundReport) -> list[tuple[str, dict[str, Any], int]]:
    return [(c.kind, c.group, c.count) for c in report.changes]


# ---- thresholds, states and events --------------------------------------------------


async def test_threshold_crossed_records_one_firing_event_with_one_outbox_row_per_channel(
    client, writer, deps, db, base
) -> None:
    rule_id = add_rule(db, filter={"service_name": "api", "min_level": "ERROR"})
    await ingest(
        client,
        writer,
        entries("api", base - timedelta(minutes=3), 6),
        entries("api", base - timedelta(minutes=3), 9, level="INFO"),  # not counted
        entries("web", base - timedelta(minutes=3), 9),  # another service
    )

    now = base + timedelta(seconds=10)
    report = await evaluate_round(deps, now)

    assert report.evaluated == [rule_id]
    assert changes_of(report) == [("firing", {}, 6)]
    [event] = events(db, rule_id)
    assert (event["kind"], event["group_key"], event["observed_count"]) == ("firing", {}, 6)
    # The window ends at the watermark, which is `now` (the streams are empty).
    assert event["window_end"] == now
    assert event["window_start"] == now - timedelta(minutes=5)
    assert event["started_at"] == now
    assert event["resolved_at"] is None
    assert outbox(db, event["id"]) == [(0, "webhook", "firing"), (1, "slack", "firing")]
    assert states(db, rule_id) == {"{}": ("firing", 6)}
    row = rule_row(db, rule_id)
    assert row["evaluated_tick"] == tick_of(now, INTERVAL)
    assert row["last_triggered"] == now
    evaluation = row["last_evaluation"]
    assert evaluation["groups"] == [{"group": {}, "count": 6, "state": "firing", "fires": True}]
    assert evaluation["from_rollups"] is True
    assert evaluation["window_start"] == (now - timedelta(minutes=5)).isoformat()
    assert evaluation["window_end"] == now.isoformat()
    assert evaluation["watermark"] == now.isoformat()


async def test_a_firing_rule_stays_firing_without_repeats_then_resolves_once(
    client, writer, deps, db, base
) -> None:
    rule_id = add_rule(db)
    await ingest(client, writer, entries("api", base - timedelta(minutes=3), 6))

    fired_at = base + timedelta(seconds=10)
    first = await evaluate_round(deps, fired_at)
    assert changes_of(first) == [("firing", {}, 6)]
    # The same tick again: nothing left to claim.
    again = await evaluate_round(deps, base + timedelta(seconds=20))
    assert (again.evaluated, again.changes) == ([], [])
    # Later ticks while the entries are still in the window (the last one's starts at
    # base - 3 min 20 s): evaluated, still counting all six, no new event.
    for seconds in (40, 70, 100):
        later = await evaluate_round(deps, base + timedelta(seconds=seconds))
        assert (later.evaluated, later.changes) == ([rule_id], [])
        assert states(db, rule_id) == {"{}": ("firing", 6)}
    assert kinds(db, rule_id) == ["firing"]

    # Three minutes on, the errors have left the 5-minute window (it starts at
    # base - 1 min 50 s).
    resolved_at = base + timedelta(minutes=3, seconds=10)
    resolved = await evaluate_round(deps, resolved_at)
    assert changes_of(resolved) == [("resolved", {}, 0)]
    firing, resolution = events(db, rule_id)
    assert resolution["started_at"] == firing["started_at"] == fired_at
    assert resolution["resolved_at"] == resolved_at
    assert outbox(db, resolution["id"]) == [(0, "webhook", "resolved"), (1, "slack", "resolved")]
    assert states(db, rule_id) == {"{}": ("ok", 0)}

    quiet = await evaluate_round(deps, base + timedelta(minutes=4))
    assert (quiet.evaluated, quiet.changes) == ([rule_id], [])
    assert kinds(db, rule_id) == ["firing", "resolved"]


async def test_a_new_evaluator_continues_from_the_stored_state(
    client, writer, settings, db, base
) -> None:
    """Persisted states: a restarted evaluator neither fires again nor forgets to resolve."""
    rule_id = add_rule(db)
    await ingest(client, writer, entries("api", base - timedelta(minutes=3), 6))
    async with round_deps(settings) as first:
        assert changes_of(await evaluate_round(first, base + timedelta(seconds=10))) == [
            ("firing", {}, 6)
        ]
    async with round_deps(settings) as restarted:
        assert (await evaluate_round(restarted, base + timedelta(seconds=40))).changes == []
        resolved = await evaluate_round(restarted, base + timedelta(minutes=4))
        assert changes_of(resolved) == [("resolved", {}, 0)]
    assert kinds(db, rule_id) == ["firing", "resolved"]


async def test_below_rule_fires_when_a_service_goes_silent_and_resolves_when_it_resumes(
    client, writer, deps, db, base
) -> None:
    rule_id = add_rule(db, filter={}, condition="below", threshold=1, group_by=("service_name",))
    # One entry each a minute, from base - 4 min 30 s: all five inside the first window,
    # which starts at base - 4 min 50 s.
    for m in range(5, 0, -1):
        at = base - timedelta(minutes=m) + timedelta(seconds=30)
        await accept(client, entries("api", at, 1, level="INFO"))
        await accept(client, entries("worker", at, 1, level="INFO"))
    await store(writer)
    both_ok = await evaluate_round(deps, base + timedelta(seconds=10))
    assert both_ok.changes == []
    assert states(db, rule_id) == {
        '{"service_name": "api"}': ("ok", 5),
        '{"service_name": "worker"}': ("ok", 5),
    }

    # api keeps logging, worker goes silent: five minutes on, worker counts nothing.
    for m in range(0, 6):
        await accept(client, entries("api", base + timedelta(minutes=m), 1, level="INFO"))
    await store(writer)
    silent = await evaluate_round(deps, base + timedelta(minutes=6, seconds=10))
    assert changes_of(silent) == [("firing", {"service_name": "worker"}, 0)]

    # After the window that saw the silence ended (base + 6 min 10 s).
    resumed_at = base + timedelta(minutes=6, seconds=30)
    await ingest(client, writer, entries("worker", resumed_at, 2, level="INFO"))
    resumed = await evaluate_round(deps, base + timedelta(minutes=7, seconds=10))
    assert changes_of(resumed) == [("resolved", {"service_name": "worker"}, 2)]
    assert kinds(db, rule_id) == ["firing", "resolved"]


async def test_group_by_service_fires_once_per_service_over_the_threshold(
    client, writer, deps, db, base
) -> None:
    rule_id = add_rule(db, group_by=("service_name",))
    at = base - timedelta(minutes=2)
    await ingest(
        client, writer, entries("api", at, 7), entries("web", at, 5), entries("cron", at, 4)
    )

    report = await evaluate_round(deps, base + timedelta(seconds=10))

    assert sorted(changes_of(report), key=lambda c: c[2]) == [
        ("firing", {"service_name": "web"}, 5),
        ("firing", {"service_name": "api"}, 7),
    ]
    assert sorted(e["group_key"]["service_name"] for e in events(db, rule_id)) == ["api", "web"]
    for event in events(db, rule_id):
        assert len(outbox(db, event["id"])) == len(CHANNELS)
    assert states(db, rule_id)['{"service_name": "cron"}'] == ("ok", 4)


async def test_the_cooldown_holds_back_a_new_firing_until_it_is_over(
    client, writer, deps, db, base
) -> None:
    rule_id = add_rule(db, threshold=3, window_mins=1, cooldown_mins=10)
    # Bursts of five, each inside one of the 1-minute windows below (which end 10 s past
    # the minute) and outside the others.
    burst = timedelta(seconds=30)
    await ingest(
        client,
        writer,
        entries("api", base + burst, 5),
        entries("api", base + timedelta(minutes=2) + burst, 5),
        entries("api", base + timedelta(minutes=10) + burst, 5),
    )
    fired_at = base + timedelta(minutes=1, seconds=10)
    assert [c.kind for c in (await evaluate_round(deps, fired_at)).changes] == ["firing"]
    resolved = await evaluate_round(deps, base + timedelta(minutes=2, seconds=10))
    assert [c.kind for c in resolved.changes] == ["resolved"]

    held = await evaluate_round(deps, base + timedelta(minutes=3, seconds=10))
    assert held.changes == []
    group = rule_row(db, rule_id)["last_evaluation"]["groups"][0]
    assert (group["count"], group["fires"], group["state"]) == (5, True, "ok")

    # Ten minutes after the first firing the cooldown is over.
    again = await evaluate_round(deps, fired_at + timedelta(minutes=10))
    assert [c.kind for c in again.changes] == ["firing"]
    assert kinds(db, rule_id) == ["firing", "resolved", "firing"]


async def test_a_search_rule_is_counted_from_rows_and_a_service_rule_from_rollups(
    client, writer, deps, db, base
) -> None:
    search_id = add_rule(db, filter={"search": "timeout"}, threshold=3)
    service_id = add_rule(db, filter={"service_name": "api"}, threshold=3)
    at = base - timedelta(minutes=2)
    await ingest(
        client,
        writer,
        entries("api", at, 3, message="upstream timeout"),
        entries("api", at, 4, message="all good"),
    )

    report = await evaluate_round(deps, base + timedelta(seconds=10))

    assert sorted(report.evaluated) == sorted([search_id, service_id])
    searched = rule_row(db, search_id)["last_evaluation"]
    assert (searched["from_rollups"], searched["groups"][0]["count"]) == (False, 3)
    by_service = rule_row(db, service_id)["last_evaluation"]
    assert (by_service["from_rollups"], by_service["groups"][0]["count"]) == (True, 7)
    assert kinds(db, search_id) == kinds(db, service_id) == ["firing"]


async def test_a_rule_counts_its_own_tenant_only(client, writer, deps, db, base) -> None:
    mine = add_rule(db, tenant=TENANT)
    theirs = add_rule(db, tenant=OTHER_TENANT)
    await accept(client, entries("api", base - timedelta(minutes=2), 6), tenant=OTHER_TENANT)
    await store(writer)

    await evaluate_round(deps, base + timedelta(seconds=10))

    assert kinds(db, mine) == []
    assert kinds(db, theirs) == ["firing"]


# ---- what is not evaluated ----------------------------------------------------------


async def test_a_disabled_rule_is_not_evaluated_until_enabled(
    client, writer, deps, db, base
) -> None:
    rule_id = add_rule(db, enabled=False)
    await ingest(client, writer, entries("api", base - timedelta(minutes=2), 6))

    report = await evaluate_round(deps, base + timedelta(seconds=10))

    assert report.evaluated == []
    assert rule_row(db, rule_id) == {
        "evaluated_tick": 0,
        "last_evaluation": None,
        "last_triggered": None,
    }
    assert kinds(db, rule_id) == []
    db.execute("UPDATE log_alerts SET enabled = true WHERE id = %s", (rule_id,))
    enabled = await evaluate_round(deps, base + timedelta(seconds=40))
    assert changes_of(enabled) == [("firing", {}, 6)]


async def test_a_deleted_rule_is_not_evaluated(client, writer, deps, db, base) -> None:
    rule_id = add_rule(db)
    db.execute("UPDATE log_alerts SET deleted_at = now() WHERE id = %s", (rule_id,))
    await ingest(client, writer, entries("api", base - timedelta(minutes=2), 6))

    report = await evaluate_round(deps, base + timedelta(seconds=10))

    assert report.evaluated == []
    assert rule_row(db, rule_id)["evaluated_tick"] == 0
    assert kinds(db, rule_id) == []
    assert states(db, rule_id) == {}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("enabled = false", "disabled"),
        ("deleted_at = now()", "deleted"),
        ("threshold = 100", "changed since it was counted"),
        ("evaluated_tick = evaluated_tick + 1", "claimed by a later tick"),
    ],
)
async def test_a_rule_changed_between_its_count_and_its_write_writes_nothing(
    client, writer, deps, db, base, change, reason
) -> None:
    """The API may disable, delete or replace a rule while it is being counted: the
    write transaction re-reads it under lock and drops a stale evaluation."""
    rule_id = add_rule(db)
    await ingest(client, writer, entries("api", base - timedelta(minutes=2), 6))
    now = base + timedelta(seconds=10)
    tick = tick_of(now, INTERVAL)
    async with deps.pool.connection() as conn:
        [rule] = (await claim_rules(conn, tick, 10)).rules
    counted = await count_window(deps.pool, rule, Window.ending_at(now, rule.window_mins), 5_000)
    assert counted.groups == [({}, 6)]

    db.execute(f"UPDATE log_alerts SET {change} WHERE id = %s", (rule_id,))
    async with deps.pool.connection() as conn:
        outcome = await store_outcome(
            conn, rule, Observation(counted, now, now, tick), deps.public_url
        )

    assert (outcome.skipped, outcome.changes) == (reason, [])
    assert kinds(db, rule_id) == []
    assert states(db, rule_id) == {}
    assert rule_row(db, rule_id)["last_evaluation"] is None


async def test_a_rule_that_cannot_be_counted_is_reported_and_the_others_are_evaluated(
    client, writer, deps, db, base
) -> None:
    broken = add_rule(db, filter={"level": "LOUD"})  # written around the API's validation
    unreadable = add_rule(db, filter={"no_such_field": 1})
    fine = add_rule(db)
    await ingest(client, writer, entries("api", base - timedelta(minutes=2), 6))

    report = await evaluate_round(deps, base + timedelta(seconds=10))

    assert report.evaluated == [fine]
    assert sorted(report.failed) == sorted([broken, unreadable])
    assert kinds(db, fine) == ["firing"]
    for rule_id in (broken, unreadable):
        evaluation = rule_row(db, rule_id)["last_evaluation"]
        assert "invalid" in evaluation["error"], evaluation
        assert kinds(db, rule_id) == []
    # Still failing at the next tick: recorded again, logged only once (deps.failing).
    await evaluate_round(deps, base + timedelta(seconds=40))
    assert deps.failing == {broken, unreadable}


# ---- backlog: windows end at the committed watermark --------------------------------


async def test_a_backlog_neither_fires_nor_resolves_and_the_stored_data_then_decides(
    client, writer, deps, db
) -> None:
    """Writers stop while the gateway keeps accepting. Evaluated at a `now` ten minutes
    on, a window ending at `now` would see none of the accepted entries: `worker`
    silent (the below rule fires), no errors (the above rule resolves). The window ends
    at the committed watermark instead, so neither happens until the entries are stored;
    then the rules follow what was really sent."""
    start = datetime.now(UTC)
    silent = add_rule(
        db,
        name="worker silent",
        filter={"service_name": "worker"},
        condition="below",
        threshold=1,
    )
    errors = add_rule(db, name="api errors", filter={"service_name": "api", "level": "ERROR"})
    # Stored: four minutes of both, inside every 5-minute window ending in the next minute.
    for m in range(4, 0, -1):
        await accept(client, entries("api", start - timedelta(minutes=m), 3))
        await accept(client, entries("worker", start - timedelta(minutes=m), 1, level="INFO"))
    await store(writer)
    first = await evaluate_round(deps, datetime.now(UTC))
    assert [c.kind for c in first.changes] == ["firing"]
    assert kinds(db, errors) == ["firing"]
    assert kinds(db, silent) == []
    assert (states(db, errors), states(db, silent)) == ({"{}": ("firing", 12)}, {"{}": ("ok", 4)})

    # The backlog: accepted, not stored. worker keeps logging until minute 10; api's
    # errors stop (INFO only). All stamped from a minute on: after the watermark.
    backlog_from = datetime.now(UTC)
    for m in range(1, 11):
        await accept(client, entries("worker", start + timedelta(minutes=m), 1, level="INFO"))
        await accept(client, entries("api", start + timedelta(minutes=m), 2, level="INFO"))
    later = start + timedelta(minutes=10, seconds=5)
    during = await evaluate_round(deps, later)
    assert during.watermark < datetime.now(UTC) < later
    assert during.changes == []
    # The windows end exactly at the watermark: when the first waiting message was
    # accepted (stream ids are whole milliseconds), before any entry still waiting.
    for rule_id in (silent, errors):
        evaluation = rule_row(db, rule_id)["last_evaluation"]
        assert datetime.fromisoformat(evaluation["window_end"]) == during.watermark
    assert backlog_from - timedelta(milliseconds=5) <= during.watermark
    assert during.watermark < start + timedelta(minutes=1)
    # What is stored still decides, counted as before.
    assert (states(db, errors), states(db, silent)) == ({"{}": ("firing", 12)}, {"{}": ("ok", 4)})
    assert kinds(db, silent) == []
    assert kinds(db, errors) == ["firing"]

    await store(writer)
    after = await evaluate_round(deps, later + timedelta(seconds=INTERVAL))
    # worker logged up to minute 10: not silent. api's errors are gone: resolved.
    assert changes_of(after) == [("resolved", {}, 0)]
    assert kinds(db, silent) == []
    assert kinds(db, errors) == ["firing", "resolved"]
    # The window (5 min 35 s to 10 min 35 s after start) holds worker's minutes 6 to 10.
    assert states(db, silent) == {"{}": ("ok", 5)}


# ---- several evaluators --------------------------------------------------------------


async def test_concurrent_rounds_share_the_rules_and_record_one_event_per_change(
    client, writer, settings, db, base
) -> None:
    firing = [add_rule(db, name=f"fires {i}") for i in range(12)]
    quiet = [add_rule(db, name=f"quiet {i}", threshold=1000) for i in range(12)]
    await ingest(client, writer, entries("api", base - timedelta(minutes=2), 6))

    async with round_deps(settings, claim_batch=3) as a, round_deps(settings, claim_batch=3) as b:
        for step in range(3):
            now = base + timedelta(seconds=10 + INTERVAL * step)
            one, two = await asyncio.gather(evaluate_round(a, now), evaluate_round(b, now))
            # Each rule once per tick, by one of the two.
            assert not set(one.evaluated) & set(two.evaluated)
            assert sorted(one.evaluated + two.evaluated) == sorted(firing + quiet)
            assert len(one.changes) + len(two.changes) == (len(firing) if step == 0 else 0)

    for rule_id in firing:
        [event] = events(db, rule_id)
        assert len(outbox(db, event["id"])) == len(CHANNELS)
    for rule_id in quiet:
        assert kinds(db, rule_id) == []


# ---- the process ---------------------------------------------------------------------


def process_settings(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, alert_eval_interval_seconds=1, log_level="info", **changes)


def evaluated_ticks(db: psycopg.Connection) -> list[int]:
    return [int(r[0]) for r in db.execute("SELECT evaluated_tick FROM log_alerts ORDER BY id")]


async def wait_for_ticks(db: psycopg.Connection, service: Service, ticks: int) -> None:
    """Until every rule has been evaluated `ticks` more times (at ALERT_EVAL_INTERVAL=1
    ticks, named by their start in seconds, are consecutive numbers)."""
    start = min(evaluated_ticks(db))
    await wait_until(
        lambda: min(evaluated_ticks(db)) >= start + ticks,
        within=30,
        what=f"{ticks} more ticks; output:\n{service.output()[-2000:]}",
    )


def stop_cleanly(service: Service) -> None:
    service.signal(signal.SIGTERM)
    assert service.wait(20) == 0, service.output()[-3000:]
    assert "Traceback" not in service.output(), service.output()[-3000:]


async def test_the_evaluator_process_fires_once_per_change_and_stops_on_sigterm(
    client, writer, settings, db, tmp_path
) -> None:
    rule_id = add_rule(db)
    await ingest(client, writer, entries("api", datetime.now(UTC) - timedelta(minutes=2), 6))

    with Service("services.evaluator", service_env(process_settings(settings)), tmp_path) as ev:
        await wait_until(lambda: kinds(db, rule_id), within=30, what="the firing event")
        await wait_for_ticks(db, ev, 3)
        assert kinds(db, rule_id) == ["firing"]
        [event] = events(db, rule_id)
        assert len(outbox(db, event["id"])) == len(CHANNELS)
        stop_cleanly(ev)
    lines = [line for line in ev.output().splitlines() if '"alert_firing"' in line]
    assert len(lines) == 1, ev.output()[-3000:]


async def test_two_evaluator_processes_record_one_event_per_change(
    client, writer, settings, db, tmp_path
) -> None:
    rules = [add_rule(db, name=f"rule {i}") for i in range(20)]
    await ingest(client, writer, entries("api", datetime.now(UTC) - timedelta(minutes=2), 6))
    env = service_env(process_settings(settings))

    with (
        Service("services.evaluator", env, tmp_path, name="evaluator-a") as a,
        Service("services.evaluator", env, tmp_path, name="evaluator-b") as b,
    ):
        await wait_until(
            lambda: all(kinds(db, r) for r in rules), within=30, what="every rule firing"
        )
        await wait_for_ticks(db, a, 4)
        stop_cleanly(a)
        stop_cleanly(b)
    assert [kinds(db, r) for r in rules] == [["firing"]] * len(rules)
    notifications = db.execute("SELECT count(*) FROM alert_notifications").fetchone()
    assert notifications == (len(rules) * len(CHANNELS),)
    # Each change was recorded, and logged, by exactly one of the two.
    logged = sum(line.count('"alert_firing"') for p in (a, b) for line in p.output().splitlines())
    assert logged == len(rules)


@pytest.fixture
def private_postgres_settings(settings: Settings) -> Iterator[tuple[PrivatePostgres, Settings]]:
    postgres = PrivatePostgres()
    postgres.start()
    try:
        yield (
            postgres,
            replace(
                settings,
                postgres_host="127.0.0.1",
                postgres_port=postgres.port,
                postgres_user="postgres",
                postgres_password="",
                postgres_db="postgres",
            ),
        )
    finally:
        postgres.remove()


async def test_the_evaluator_waits_out_postgres_and_redis_going_away(
    private_postgres_settings, tmp_path: Path
) -> None:
    """Neither outage ends the process or makes it loop on errors: it logs the pause
    once, and evaluates again when the dependency is back."""
    postgres, pg_settings = private_postgres_settings
    with private_redis() as redis_server:
        config = process_settings(pg_settings, redis_port=redis_server.port)
        with Service("services.evaluator", service_env(config), tmp_path) as ev:
            # The process migrates the empty database; then a `below` rule on a service
            # that never logged fires on its own.
            def rule_added() -> bool:
                try:
                    with psycopg.connect(postgres.conninfo(), autocommit=True) as conn:
                        add_rule(conn, filter={"service_name": "none"}, condition="below")
                    return True
                except psycopg.Error:
                    return False

            await wait_until(rule_added, within=60, what="the migrated database")

            def fired() -> int:
                with psycopg.connect(postgres.conninfo()) as conn:
                    row = conn.execute("SELECT count(*) FROM alert_events").fetchone()
                return int(row[0]) if row else 0

            await wait_until(fired, within=30, what="the first event")

            redis_server.kill()
            await wait_until(
                lambda: "alert scheduling paused" in ev.output(), within=30, what="a pause"
            )
            redis_server.start()
            before = fired()
            with psycopg.connect(postgres.conninfo(), autocommit=True) as conn:
                add_rule(conn, filter={"service_name": "none"}, condition="below")
            await wait_until(lambda: fired() > before, within=30, what="evaluation after Redis")

            postgres.stop()
            await wait_until(
                lambda: "alert evaluation paused" in ev.output(), within=30, what="a pause"
            )
            postgres.start()
            before = fired()
            with psycopg.connect(postgres.conninfo(), autocommit=True) as conn:
                add_rule(conn, filter={"service_name": "none"}, condition="below")
            await wait_until(lambda: fired() > before, within=60, what="evaluation after PG")

            assert ev.running()
            stop_cleanly(ev)
        output = ev.output()
        # Logged once per outage, not per tick (a round running when Redis went away
        # may add one "evaluation paused" of its own).
        assert output.count("alert scheduling paused") == 1, output[-3000:]
        assert 1 <= output.count("alert evaluation paused") <= 2, output[-3000:]
