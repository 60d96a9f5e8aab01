"""The writer's cache of events waiting behind their key's tail: what it holds, when it lets go."""

from __future__ import annotations

from journey.storage.waiting_cache import UNKNOWN, WaitingCache


def test_a_key_is_held_from_its_tail_on_and_gives_its_events_in_order() -> None:
    cache = WaitingCache()
    cache.add("g", "k", (5, 0, b"e5"))  # not held yet: what waited before is unknown here
    assert cache.take("g", "k") is UNKNOWN
    cache.start("g", "k")
    cache.add("g", "k", (7, 1, b"e7"))
    cache.add("g", "k", (9, 2, b"e9"))
    assert (len(cache), cache.holds("g", "k"), cache.holds("other", "k")) == (2, True, False)
    assert cache.take("g", "k") == (7, 1, b"e7")
    assert cache.take("g", "k") == (9, 2, b"e9")
    # Nothing waits behind the last tail: once it is settled the key has no entry to hold.
    assert cache.take("g", "k") is None
    assert cache.take("g", "k") is UNKNOWN
    assert len(cache) == 0


def test_a_full_cache_forgets_the_key_it_cannot_complete() -> None:
    cache = WaitingCache(capacity=2)
    cache.start("g", "a")
    cache.start("g", "b")
    cache.add("g", "a", (1, 0, b""))
    cache.add("g", "b", (2, 0, b""))
    cache.add("g", "b", (3, 0, b""))
    # Holding "b" without event 3 would hand out what follows it too early.
    assert (cache.holds("g", "a"), cache.holds("g", "b"), len(cache)) == (True, False, 1)


def test_forgetting_a_key_a_group_or_everything() -> None:
    cache = WaitingCache()
    for group, key, position in (("g", "a", 1), ("g", "b", 2), ("h", "a", 3)):
        cache.start(group, key)
        cache.add(group, key, (position, 0, b""))
    cache.forget("g", "a")
    assert (cache.holds("g", "a"), cache.holds("g", "b"), len(cache)) == (False, True, 2)
    cache.forget("g")
    assert (cache.holds("g", "b"), cache.holds("h", "a"), len(cache)) == (False, True, 1)
    cache.start("h", "a")  # read again from the log: what was held for it is dropped
    assert len(cache) == 0
    cache.add("h", "a", (4, 0, b""))
    cache.clear()
    assert (cache.holds("h", "a"), len(cache)) == (False, 0)
