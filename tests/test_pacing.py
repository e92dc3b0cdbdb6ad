"""The janitor's pacing: after each step it rests in proportion to the step's length, so
that deletes and archives leave most of the machine to ingest."""

from __future__ import annotations

from services.janitor.pacing import MAX_REST_SECONDS, Pace


class FakeTime:
    """A clock that moves only when the code under test sleeps or a step 'works'."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def work(self, seconds: float) -> None:
        self.now += seconds


def test_rests_in_proportion_to_each_step() -> None:
    time = FakeTime()
    pace = Pace(0.5, time.clock, time.sleep)
    for step in (0.2, 0.1, 0.4):
        time.work(step)
        pace.rest()
    # Each rest follows its own step only: resting is not counted as the next step's work.
    assert [round(s, 9) for s in time.slept] == [0.1, 0.05, 0.2]
    assert abs(pace.rested - 0.35) < 1e-9


def test_a_long_step_is_followed_by_a_bounded_rest() -> None:
    time = FakeTime()
    pace = Pace(2.0, time.clock, time.sleep)
    time.work(30.0)
    pace.rest()
    assert time.slept == [MAX_REST_SECONDS]


def test_ratio_zero_never_sleeps() -> None:
    time = FakeTime()
    pace = Pace(0.0, time.clock, time.sleep)
    time.work(1.0)
    pace.rest()
    assert time.slept == []


def test_over_rests_between_items_counting_the_consumers_work() -> None:
    time = FakeTime()
    pace = Pace(1.0, time.clock, time.sleep)
    seen = []
    for item in pace.over(["a", "b"]):
        time.work(0.3)  # what the consumer does with the item is part of the step
        seen.append(item)
    assert seen == ["a", "b"]
    assert [round(s, 9) for s in time.slept] == [0.3, 0.3]
