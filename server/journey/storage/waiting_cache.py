"""Events a lone writer saw wait behind their key's tail, so a settled tail's next needs no read.

With per-key ordering, a round reads an event whose key has a tail entry and leaves it in the
log (storage/groups.py); when the tail is settled, the key's next event is looked up in the log
by index. On SQLite this process is the only writer, so the rounds that read those events can
keep them: per group and key, every event waiting behind the tail, in order, exactly as the log
holds them. A key is held only from the moment its tail is read from the log by a round here
(nothing waits behind it yet), and dropped as soon as anything makes its waiting events harder
to know (a blocked entry, a redrive, a full cache); a key not held is looked up as before.
The writer clears it all whenever a transaction fails, since what it holds may not have been
committed. Not used on PostgreSQL, where other replicas change the same groups.
"""

from __future__ import annotations

import enum
from collections import deque

# The transaction's connection.info key under which the writer hands it to the rounds.
INFO_KEY = "journey.waiting_cache"
# Events held in all, at most. A seeded event's encoded form is about 200 bytes, so a full
# cache holds some 10 MB; keys beyond it are looked up in the log.
CAPACITY = 50_000


class Unknown(enum.Enum):
    """What `take` returns for a key it does not hold."""

    UNKNOWN = enum.auto()


UNKNOWN = Unknown.UNKNOWN

# (position, occur_time as stored, encoded)
Waiting = tuple[int, int, bytes]


class WaitingCache:
    """Per group and key, the events waiting in the log behind the key's tail, in order."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._capacity = capacity
        self._size = 0
        self._groups: dict[str, dict[str, deque[Waiting]]] = {}

    def __len__(self) -> int:
        return self._size

    def holds(self, group_id: str, key: str) -> bool:
        """Whether the key's waiting events are all held here."""
        return key in self._groups.get(group_id, {})

    def start(self, group_id: str, key: str) -> None:
        """The key's tail was just read from the log, with no blocked entry: nothing waits."""
        self.forget(group_id, key)
        self._groups.setdefault(group_id, {})[key] = deque()

    def add(self, group_id: str, key: str, event: Waiting) -> None:
        """An event just read waits behind its key's tail (after every event held for it)."""
        held = self._groups.get(group_id, {}).get(key)
        if held is None:
            return
        if self._size >= self._capacity:
            self.forget(group_id, key)
            return
        held.append(event)
        self._size += 1

    def take(self, group_id: str, key: str) -> Waiting | Unknown | None:
        """The key's tail was settled: its next event (the new tail), None, or UNKNOWN.

        None: nothing waits, and the key is forgotten (it has no unsettled entry now).
        """
        keys = self._groups.get(group_id)
        held = None if keys is None else keys.get(key)
        if keys is None or held is None:
            return UNKNOWN
        if not held:
            del keys[key]
            return None
        self._size -= 1
        return held.popleft()

    def forget(self, group_id: str, key: str | None = None) -> None:
        """Stop holding one key of a group, or the whole group."""
        keys = self._groups.get(group_id)
        if keys is None:
            return
        if key is None:
            self._size -= sum(len(held) for held in keys.values())
            del self._groups[group_id]
            return
        held = keys.pop(key, None)
        if held is not None:
            self._size -= len(held)

    def clear(self) -> None:
        """Hold nothing."""
        self._groups.clear()
        self._size = 0
