"""An alert rule's state machine, per group: what one evaluation changes.

Pure: it takes what was counted and what was stored, and returns each group's new state
and the change to record, if any. The caller (services/evaluator/outcome.py) reads and
writes the states in PostgreSQL, so a restart neither re-fires nor forgets.

    ok ──fires, cooldown over──▶ firing ──stops firing──▶ (resolved) ok

Anything else only updates the group's last count. The groups evaluated are the ones
counted this time and the ones with a stored state: a `below` rule must see a service
that went silent (count 0, nothing counted); a rule without group_by always has the
one group `{}`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

import msgspec

from shared.alert_events import EventKind
from shared.alerts import AlertRule, GroupKey, RuleCount

State = Literal["ok", "firing"]


@dataclass(frozen=True, slots=True)
class GroupState:
    """A row of alert_states (less its keys)."""

    state: State
    since: datetime
    last_count: int
    open_event_id: uuid.UUID | None = None
    last_fired_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """One group after one evaluation: `after` is None when its stored row goes."""

    group: GroupKey
    count: int
    fires: bool
    before: GroupState | None
    after: GroupState | None
    change: EventKind | None = None
    reason: str = ""


def canonical(group: GroupKey) -> str:
    """The group as text that is equal exactly when the groups are (key order aside),
    as jsonb equality is for alert_states' primary key."""
    return msgspec.json.encode(group, order="sorted").decode()


def decide(
    rule: AlertRule,
    counted: RuleCount,
    stored: Iterable[tuple[GroupKey, GroupState]],
    now: datetime,
) -> list[Transition]:
    """Every group's transition for one evaluation of `rule`, in a stable order (by the
    group's canonical text). `now` is wall-clock time, for the cooldown only: windows
    and events are dated by the window's end (the committed watermark)."""
    known = {canonical(group): (group, state) for group, state in stored}
    counts = {canonical(group): (group, n) for group, n in counted.groups}
    if not rule.group_by:
        # The one group of an ungrouped rule exists even when nothing was counted.
        counts.setdefault(canonical({}), ({}, 0))
    shape = set(rule.group_by)
    transitions = []
    for key in sorted(known.keys() | counts.keys()):
        group, before = known.get(key, (None, None))
        if before is not None and group is not None and set(group) != shape:
            transitions.append(_retired(group, before, counted))
            continue
        group, count = counts.get(key, (group, 0))
        assert group is not None
        transitions.append(_evaluate(rule, group, count, before, counted, now))
    return transitions


def _evaluate(
    rule: AlertRule,
    group: GroupKey,
    count: int,
    before: GroupState | None,
    counted: RuleCount,
    now: datetime,
) -> Transition:
    end = counted.window.end
    fires = rule.fires(count)
    current = before or GroupState("ok", since=end, last_count=count)
    if current.state == "ok" and fires and _cooled_down(rule, current, now):
        after = GroupState("firing", since=end, last_count=count, last_fired_at=now)
        return Transition(group, count, fires, before, after, "firing")
    if current.state == "firing" and not fires:
        after = replace(current, state="ok", since=end, last_count=count, open_event_id=None)
        return Transition(group, count, fires, before, after, "resolved")
    after = replace(current, last_count=count)
    if _forgettable(rule, after, count, now):
        # An `above` rule grouped by, say, host would otherwise keep a row for every host
        # that ever logged. Nothing is lost: a group with no row is ok, and the cooldown
        # is over.
        return Transition(group, count, fires, before, None)
    return Transition(group, count, fires, before, after)


def _retired(group: GroupKey, before: GroupState, counted: RuleCount) -> Transition:
    """A stored group of another shape (group_by changed since): it can never be counted
    again. A firing one is resolved so that nobody's pager stays on; then it goes."""
    if before.state == "firing":
        return Transition(group, 0, False, before, None, "resolved", reason="group_by changed")
    return Transition(group, 0, False, before, None)


def _cooled_down(rule: AlertRule, state: GroupState, now: datetime) -> bool:
    return state.last_fired_at is None or now - state.last_fired_at >= timedelta(
        minutes=rule.cooldown_mins
    )


def _forgettable(rule: AlertRule, after: GroupState, count: int, now: datetime) -> bool:
    return (
        bool(rule.group_by)
        and rule.condition == "above"
        and after.state == "ok"
        and count == 0
        and _cooled_down(rule, after, now)
    )
