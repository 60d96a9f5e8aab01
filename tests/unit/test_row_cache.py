"""The row cache holds the newest writes, up to its capacity, and forgets on request."""

from __future__ import annotations

from datetime import UTC, datetime

from journey.domain.model import Profile
from journey.storage.row_cache import BoundedMap, RowCache

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_value_written_longest_ago_goes_first() -> None:
    bounded: BoundedMap[int] = BoundedMap(2)
    bounded.put_all([("a", 1), ("b", 2)])
    # Written again, "a" is the newest, so "b" is the one dropped.
    bounded.put_all([("a", 10), ("c", 3)])
    assert len(bounded) == 2
    assert (bounded.get("a"), bounded.get("b"), bounded.get("c")) == (10, None, 3)


def test_one_write_larger_than_the_capacity_keeps_its_last_values() -> None:
    bounded: BoundedMap[int] = BoundedMap(3)
    bounded.put_all((str(i), i) for i in range(10))
    assert [bounded.get(str(i)) for i in range(10)] == [None] * 7 + [7, 8, 9]


def test_clear_forgets_sessions_and_profiles() -> None:
    cache = RowCache(capacity=10)
    profile = Profile("p", NOW, NOW, 1, 1)
    cache.remember([], [profile])
    assert cache.profiles.get("p") is profile
    cache.clear()
    assert cache.profiles.get("p") is None
    assert len(cache.sessions) == len(cache.profiles) == 0
