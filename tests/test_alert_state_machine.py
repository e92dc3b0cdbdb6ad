"""The alert state machine alone (no database): ok → firing → resolved (→ ok) per group,
the cooldown, silent groups of `below` rules, and the tick schedule the cron follows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from arq.cron import next_cron
from hypothesis import given
from hypothesis import strategies as st

from services.evaluator.schedule import cron_times, tick_of
from services.evaluator.state_machine import GroupState, Transition, canonical, decide
from shared.alerts import AlertRule, GroupKey, RuleCount, Window
from shared.filters import LogFilter

NOW = datetime(2026, 3, 1, 12, 0, 40, tzinfo=UTC)
WINDOW = Window.ending_at(NOW, 5)


def rule(**changes: object) -> AlertRule:
    fields: dict[str, object] = {
        "id": uuid.uuid4(),
        "tenant_id": uuid.uuid4(),
        "name": "errors",
        "filter": LogFilter(level="ERROR"),
        "condition": "above",
        "threshold": 5,
        "window_mins": 5,
        "severity": "warning",
        "group_by": (),
        "cooldown_mins": 0,
    }
    fields.update(changes)
    return AlertRule(**fields)  # type: ignore[arg-type]


def counted(*groups: tuple[GroupKey, int], window: Window = WINDOW) -> RuleCount:
    return RuleCount(window, list(groups), from_rollups=True)


def only(transitions: list[Transition]) -> Transition:
    assert len(transitions) == 1, transitions
    return transitions[0]


def test_crossing_the_threshold_fires_dated_at_the_window_end() -> None:
    t = only(decide(rule(), counted(({}, 5)), [], NOW))
    assert t.change == "firing"
    assert t.after == GroupState("firing", since=WINDOW.end, last_count=5, last_fired_at=NOW)
    assert t.before is None


def test_below_the_threshold_a_new_group_is_ok_without_a_change() -> None:
    t = only(decide(rule(), counted(({}, 4)), [], NOW))
    assert t.change is None
    assert t.after == GroupState("ok", since=WINDOW.end, last_count=4)


def test_a_firing_group_that_still_fires_only_updates_its_count() -> None:
    firing = GroupState("firing", NOW - timedelta(minutes=3), 7, uuid.uuid4(), NOW)
    t = only(decide(rule(), counted(({}, 9)), [({}, firing)], NOW))
    assert t.change is None
    assert t.after == GroupState("firing", firing.since, 9, firing.open_event_id, NOW)


def test_a_firing_group_that_stops_firing_resolves_and_is_ok_again() -> None:
    since = NOW - timedelta(minutes=3)
    firing = GroupState("firing", since, 7, uuid.uuid4(), NOW - timedelta(minutes=3))
    t = only(decide(rule(), counted(({}, 2)), [({}, firing)], NOW))
    assert t.change == "resolved"
    assert t.after == GroupState("ok", WINDOW.end, 2, None, firing.last_fired_at)
    assert t.before == firing


def test_nothing_counted_resolves_an_ungrouped_above_rule() -> None:
    firing = GroupState("firing", NOW - timedelta(minutes=3), 7, uuid.uuid4(), NOW)
    t = only(decide(rule(), counted(), [({}, firing)], NOW))
    assert (t.group, t.count, t.change) == ({}, 0, "resolved")


@pytest.mark.parametrize(("fired_ago", "fires"), [(4, False), (5, True), (30, True)])
def test_the_cooldown_holds_a_new_firing_back(fired_ago: int, fires: bool) -> None:
    ok = GroupState("ok", NOW, 0, None, NOW - timedelta(minutes=fired_ago))
    t = only(decide(rule(cooldown_mins=5), counted(({}, 50)), [({}, ok)], NOW))
    assert (t.change == "firing") is fires
    assert t.fires
    assert t.after is not None
    assert t.after.state == ("firing" if fires else "ok")


def test_the_cooldown_never_delays_a_resolution() -> None:
    firing = GroupState("firing", NOW, 9, uuid.uuid4(), NOW)
    t = only(decide(rule(cooldown_mins=60), counted(), [({}, firing)], NOW))
    assert t.change == "resolved"


def test_an_ungrouped_below_rule_fires_when_nothing_was_counted() -> None:
    t = only(decide(rule(condition="below", threshold=1), counted(), [], NOW))
    assert (t.group, t.count, t.change) == ({}, 0, "firing")


def test_a_below_rule_sees_a_service_that_went_silent() -> None:
    silent_rule = rule(condition="below", threshold=3, group_by=("service_name",))
    api, worker = {"service_name": "api"}, {"service_name": "worker"}
    stored = [
        (api, GroupState("ok", NOW, 10)),
        (worker, GroupState("ok", NOW, 10)),
    ]
    transitions = decide(silent_rule, counted((api, 12)), stored, NOW)
    by_group = {canonical(t.group): t for t in transitions}
    assert by_group[canonical(api)].change is None
    assert by_group[canonical(worker)].change == "firing"
    assert by_group[canonical(worker)].count == 0

    resumed = decide(
        silent_rule,
        counted((api, 12), (worker, 4)),
        [(api, GroupState("ok", NOW, 12)), (worker, GroupState("firing", NOW, 0))],
        NOW,
    )
    assert [t.change for t in resumed] == [None, "resolved"]


def test_groups_over_the_threshold_fire_separately() -> None:
    grouped = rule(group_by=("service_name",))
    transitions = decide(
        grouped,
        counted(({"service_name": "a"}, 6), ({"service_name": "b"}, 7), ({"service_name": "c"}, 1)),
        [],
        NOW,
    )
    assert [(t.group["service_name"], t.change) for t in transitions] == [
        ("a", "firing"),
        ("b", "firing"),
        ("c", None),
    ]


def test_key_order_does_not_make_a_new_group() -> None:
    grouped = rule(group_by=("service_name", "level"))
    stored_key: GroupKey = {"level": "ERROR", "service_name": "api"}
    counted_key: GroupKey = {"service_name": "api", "level": "ERROR"}
    firing = GroupState("firing", NOW, 9, uuid.uuid4(), NOW)
    t = only(decide(grouped, counted((counted_key, 9)), [(stored_key, firing)], NOW))
    assert t.change is None
    assert t.after is not None and t.after.state == "firing"


def test_a_quiet_ok_group_of_a_grouped_above_rule_is_forgotten() -> None:
    grouped = rule(group_by=("host",))
    stored = [({"host": "gone"}, GroupState("ok", NOW, 3))]
    t = only(decide(grouped, counted(), stored, NOW))
    assert (t.change, t.after) == (None, None)


def test_a_quiet_group_in_cooldown_keeps_its_row() -> None:
    grouped = rule(group_by=("host",), cooldown_mins=10)
    stored = [({"host": "h"}, GroupState("ok", NOW, 3, None, NOW - timedelta(minutes=1)))]
    t = only(decide(grouped, counted(), stored, NOW))
    assert t.after is not None


def test_groups_of_an_old_group_by_are_resolved_and_dropped() -> None:
    regrouped = rule(group_by=("host",))
    old = {"service_name": "api"}
    stored = [
        (old, GroupState("firing", NOW, 9, uuid.uuid4(), NOW)),
        ({"service_name": "web"}, GroupState("ok", NOW, 1)),
    ]
    transitions = decide(regrouped, counted(({"host": "h1"}, 1)), stored, NOW)
    by_group = {canonical(t.group): t for t in transitions}
    retired = by_group[canonical(old)]
    assert (retired.change, retired.after, retired.reason) == ("resolved", None, "group_by changed")
    assert by_group[canonical({"service_name": "web"})].after is None
    assert by_group[canonical({"service_name": "web"})].change is None
    assert by_group[canonical({"host": "h1"})].after is not None


@given(
    counts=st.lists(st.integers(min_value=0, max_value=10), min_size=1, max_size=40),
    condition=st.sampled_from(["above", "below"]),
    threshold=st.integers(min_value=1, max_value=10),
)
def test_events_alternate_and_follow_the_condition_without_a_cooldown(
    counts: list[int], condition: str, threshold: int
) -> None:
    """Reference model: without a cooldown the state after each evaluation is exactly
    `fires(count)`, and an event is recorded exactly when that changes."""
    r = rule(condition=condition, threshold=threshold)
    stored: list[tuple[GroupKey, GroupState]] = []
    firing = False
    for i, n in enumerate(counts):
        now = NOW + timedelta(minutes=i)
        t = only(decide(r, counted(({}, n), window=Window.ending_at(now, 5)), stored, now))
        fires = r.fires(n)
        assert t.change == ({True: "firing", False: "resolved"}[fires] if fires != firing else None)
        assert t.after is not None
        assert t.after.state == ("firing" if fires else "ok")
        firing = fires
        stored = [({}, t.after)]


VALID_INTERVALS = [i for i in range(1, 3601) if 60 % i == 0 or (i % 60 == 0 and 3600 % i == 0)]


@pytest.mark.parametrize("interval", VALID_INTERVALS)
def test_the_cron_fires_once_at_the_start_of_every_tick(interval: int) -> None:
    times = cron_times(interval)
    start = datetime(2026, 3, 1, 23, 0, 0, tzinfo=UTC) - timedelta(seconds=1)
    fired = []
    at = start
    for _ in range(min(8, 7200 // interval)):
        at = next_cron(at, second=times.second, minute=times.minute, microsecond=123_456)
        fired.append(at)
    ticks = [tick_of(t, interval) for t in fired]
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks) * interval, interval))
    # Fired within the first second of each tick.
    assert all(0 < t.timestamp() - tick < 1 for t, tick in zip(fired, ticks, strict=True))


def test_ticks_are_named_by_their_start_so_names_grow_across_interval_changes() -> None:
    at = datetime(2026, 3, 1, 12, 0, 45, tzinfo=UTC)
    assert tick_of(at, 30) == int(datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC).timestamp())
    assert tick_of(at + timedelta(seconds=20), 60) > tick_of(at, 30)


def test_an_interval_that_divides_neither_a_minute_nor_an_hour_is_refused() -> None:
    with pytest.raises(ValueError, match="divides neither"):
        cron_times(7)
