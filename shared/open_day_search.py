"""The search index of today's past hours, and where queries split to use it.

A closed day gets its search index when the janitor rewrites it in tenant order
(services/janitor/closed_partitions.py). Today's partition has no full one: maintaining
a trigram index under the writers would take ~63 % of the COPY rate (README, "Search"),
and without one a search of today reads the tenant's part of it row by row (a rare id
in the busiest tenant's today, 587k rows: ~190 ms).

But the writers insert entries dated now. A partial index `WHERE "timestamp" < bound`,
built after `bound` has passed, holds every entry of today up to it and takes only
late entries afterwards: it costs ingest nothing. So every STEP the janitor builds one
for the hours past (services/janitor/open_day_search.py), then drops the one before.
PostgreSQL uses a partial index only when a query's own conditions imply its predicate,
so the queries split at a bound: `timestamp < split` implies `timestamp < bound` for
every index whose bound is at or after the split. The split comes USE_AFTER past a
bound, once the janitor (every JANITOR_INTERVAL) has built its index; until then, or
without a janitor, the two parts are read as before, at the cost of one more statement.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from shared.filters import CompiledFilter

STEP = timedelta(hours=3)
# A bound's index is built once the bound is this far past: entries of the minute
# before it are then in (a live stream's lag is seconds; later ones are late entries,
# which PostgreSQL adds to the index as to any other).
BUILD_AFTER = timedelta(minutes=2)
# Queries split at a bound this long after it passed: the janitor's default interval
# (5 min) and a build (12 s for 850k rows) fit within it.
USE_AFTER = timedelta(minutes=15)
# The janitor's indexes are named <partition><INDEX_INFIX><HH>, HH the bound's hour.
INDEX_INFIX = "_search_to_"
_MIDNIGHT = datetime(2000, 1, 1, tzinfo=UTC)  # STEP divides a day: bounds fall on UTC hours


def _bound(now: datetime, after: timedelta) -> datetime | None:
    bound = now - after - (now - after - _MIDNIGHT) % STEP
    return None if (bound - _MIDNIGHT) % timedelta(days=1) == timedelta(0) else bound


def bound_to_build(now: datetime) -> datetime | None:
    """The bound of the index the janitor should have at `now` (None at a day's start)."""
    return _bound(now, BUILD_AFTER)


def split_at(now: datetime) -> datetime | None:
    """Where a search reading today splits at `now`, None when it does not."""
    return _bound(now, USE_AFTER)


def split_now() -> datetime | None:
    """Where a search reading today splits now."""
    return split_at(datetime.now(UTC))


def index_name(partition: str, bound: datetime) -> str:
    return f"{partition}{INDEX_INFIX}{bound:%H}"


def split_filter(
    f: CompiledFilter, at: datetime | None
) -> tuple[CompiledFilter, CompiledFilter] | None:
    """f's window cut at `at`: (the newer part, from `at`; the older part, before it).
    None unless f searches words and `at` lies inside its window."""
    if at is None or not f.search_terms:
        return None
    if (f.start is not None and f.start >= at) or (f.end is not None and f.end <= at):
        return None
    return replace(f, start=at), replace(f, end=at)
