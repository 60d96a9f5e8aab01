"""The sessions and profiles a lone writer last committed, so group commits need not read them."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Generic, TypeVar

from journey.domain.model import Profile, Session

V = TypeVar("V")

# Of each kind. A session and its profile with UUID ids take about 750 bytes together (measured
# with tracemalloc), so a full cache holds some 15 MB; sessions beyond it are read as before.
CAPACITY = 20_000


class BoundedMap(Generic[V]):
    """Values by id, at most `capacity`; the one written longest ago goes first."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: dict[str, V] = {}

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> V | None:
        """The value for `key`, if held."""
        return self._items.get(key)

    def put_all(self, values: Iterable[tuple[str, V]]) -> None:
        """Hold these values (each moved to the newest end), then drop the oldest over capacity."""
        items = self._items
        for key, value in values:
            # Popped first so that a value written again counts as new: dicts keep insertion order.
            items.pop(key, None)
            items[key] = value
        excess = len(items) - self._capacity
        if excess > 0:
            for key in list(itertools.islice(items, excess)):
                del items[key]

    def clear(self) -> None:
        """Forget everything."""
        self._items.clear()


class RowCache:
    """Sessions and profiles by id as this process last committed them.

    Only for a database that no other process writes: SQLite, whose lock file keeps a second
    server away. The writer adds what each group commit read or wrote once it has committed,
    and forgets everything when a transaction fails, since whether that one committed is then
    unknown. A miss says nothing: the unit of work reads the row from the database.
    """

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.sessions: BoundedMap[Session] = BoundedMap(capacity)
        self.profiles: BoundedMap[Profile] = BoundedMap(capacity)

    def remember(self, sessions: Iterable[Session], profiles: Iterable[Profile]) -> None:
        """Hold these rows, as just committed."""
        self.sessions.put_all((s.id, s) for s in sessions)
        self.profiles.put_all((p.id, p) for p in profiles)

    def clear(self) -> None:
        """Forget every row."""
        self.sessions.clear()
        self.profiles.clear()
