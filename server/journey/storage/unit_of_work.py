"""One group commit's reads and writes: what the rules need to decide, and their staged outcome."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, Table, Update, bindparam, insert, update

from journey.domain.model import (
    Encode,
    EncodedEvent,
    Profile,
    Session,
    SystemEvent,
    TrackedEvent,
)
from journey.domain.rules import Outcome, StoredEventRef
from journey.storage import statements
from journey.storage.bulk import Bulk
from journey.storage.lookup import Lookup
from journey.storage.records import (
    field_names,
    from_values,
    profile_from_row,
    row,
    session_from_row,
)
from journey.storage.row_cache import BoundedMap, RowCache

# Hands out `count` positions, in increasing order; by default they follow `last_position`.
Allocate = Callable[[Connection, int], Sequence[int]]


class Keys(NamedTuple):
    """The rows a unit of work will read, so a whole group commit can load them at once.

    A named tuple of tuples, one per Track call: the batch's union removes the repeats.
    """

    sessions: tuple[str, ...] = ()
    profiles: tuple[str, ...] = ()
    # (source_id, client event id) pairs, for the idempotency check.
    events: tuple[tuple[str, str], ...] = ()

    @staticmethod
    def union(all_keys: Iterable[Keys]) -> Keys:
        """Every key of a batch, each once, gathered in one pass."""
        sessions: set[str] = set()
        profiles: set[str] = set()
        events: set[tuple[str, str]] = set()
        for keys in all_keys:
            sessions.update(keys.sessions)
            profiles.update(keys.profiles)
            events.update(keys.events)
        return Keys(tuple(sessions), tuple(profiles), tuple(events))


class UnitOfWork:
    """Reads preloaded rows, then the database, and sees what earlier calls staged; flushes once.

    Synchronous: the writer runs a whole group commit in one go, on SQLite in its own thread.
    Each statement still costs a round trip, so a group commit issues a few statements per
    batch instead of several per call.
    """

    def __init__(
        self,
        connection: Connection,
        last_position: int,
        encode: Encode,
        allocate: Allocate | None = None,
        cache: RowCache | None = None,
    ) -> None:
        # A Core connection, not an ORM session: the ORM layer only added per-statement cost.
        self._connection = connection
        # Rows as committed, taken in place of reading them (storage/row_cache.py).
        self._cache = cache
        self._encode = encode
        # The appended events as subscribers are sent them, made by flush().
        self.encoded: list[EncodedEvent] = []
        # The position of the last system event stored or staged.
        self.last_position = last_position
        self._allocate = allocate
        self._sessions: dict[str, Session] = {}
        self._profiles: dict[str, Profile] = {}
        self._new_sessions: set[str] = set()
        self._new_profiles: set[str] = set()
        self._stored: dict[tuple[str, str], StoredEventRef] = {}
        self._tracked: list[tuple[Any, ...]] = []
        # Client event ids known not to be stored (until staged).
        self._known_new: set[tuple[str, str]] = set()
        # Rows loaded ahead; None records that a key has no row.
        self._loaded_sessions: dict[str, Session | None] = {}
        self._loaded_profiles: dict[str, Profile | None] = {}
        self.appended: list[SystemEvent] = []
        self.writes = 0

    @property
    def connection(self) -> Connection:
        """The transaction's connection, for work of other kinds (storage/groups.py)."""
        return self._connection

    def preload(self, keys: Keys) -> None:
        """Load the batch's sessions, their profiles and its known event ids in a few queries."""
        cache = self._cache
        if keys.sessions:
            cached_sessions = cache.sessions if cache is not None else None
            unread = _take_cached(keys.sessions, cached_sessions, self._loaded_sessions)
            if unread:
                found = {s.id: s for s in self._sessions_by_ids(unread)}
                self._loaded_sessions.update({i: found.get(i) for i in unread})
        profile_ids = {*keys.profiles, *(s.profile_id for s in self._loaded_sessions.values() if s)}
        if profile_ids:
            cached_profiles = cache.profiles if cache is not None else None
            unread = _take_cached(profile_ids, cached_profiles, self._loaded_profiles)
            if unread:
                rows = _PROFILES.rows(self._connection, unread)
                profiles = {p.id: p for p in (from_values(Profile, r) for r in rows)}
                self._loaded_profiles.update({i: profiles.get(i) for i in unread})
        by_source: dict[str, list[str]] = {}
        for source_id, event_id in keys.events:
            by_source.setdefault(source_id, []).append(event_id)
        for source_id, event_ids in by_source.items():
            self.stored_events(source_id, event_ids)

    def rows_now(self) -> tuple[list[Session], list[Profile]]:
        """Every session and profile this unit of work read or wrote, as it leaves them."""
        sessions = {i: s for i, s in self._loaded_sessions.items() if s is not None}
        sessions.update(self._sessions)
        profiles = {i: p for i, p in self._loaded_profiles.items() if p is not None}
        profiles.update(self._profiles)
        return list(sessions.values()), list(profiles.values())

    def _sessions_by_ids(self, session_ids: list[str]) -> list[Session]:
        return [from_values(Session, r) for r in _SESSIONS.rows(self._connection, session_ids)]

    def session(self, session_id: str) -> Session | None:
        """The session with this id, if stored or staged."""
        if not session_id:
            return None
        if session_id in self._sessions:
            return self._sessions[session_id]
        if session_id in self._loaded_sessions:
            return self._loaded_sessions[session_id]
        row = self._connection.execute(statements.session_by_id(session_id)).first()
        return session_from_row(row) if row is not None else None

    def sessions(self, session_ids: Collection[str]) -> list[Session]:
        """The sessions among these ids that are stored or staged."""
        found: list[Session] = []
        missing: list[str] = []
        for i in session_ids:
            known = self._sessions.get(i) or self._loaded_sessions.get(i)
            if known is not None:
                found.append(known)
            elif i not in self._loaded_sessions:
                missing.append(i)
        if missing:
            found.extend(self._sessions_by_ids(missing))
        return found

    def profile(self, profile_id: str) -> Profile | None:
        """The profile with this id, if stored or staged."""
        if not profile_id:
            return None
        if profile_id in self._profiles:
            return self._profiles[profile_id]
        if profile_id in self._loaded_profiles:
            return self._loaded_profiles[profile_id]
        row = self._connection.execute(statements.profile_by_id(profile_id)).first()
        return profile_from_row(row) if row is not None else None

    def stored_events(
        self, source_id: str, event_ids: Collection[str]
    ) -> dict[str, StoredEventRef]:
        """Which of these client event ids this source already stored or staged, and where."""
        found = {i: self._stored[source_id, i] for i in event_ids if (source_id, i) in self._stored}
        missing = [i for i in event_ids if i not in found and (source_id, i) not in self._known_new]
        if missing:
            for event_id, profile_id, session_id in _STORED.rows(
                self._connection, missing, source_id=source_id
            ):
                ref = StoredEventRef(profile_id, session_id)
                found[event_id] = self._stored[source_id, event_id] = ref
            self._known_new.update((source_id, i) for i in missing if i not in found)
        return found

    def apply(self, outcome: Outcome) -> tuple[SystemEvent, ...]:
        """Stage what the rules decided; returns the system events with their positions."""
        for profile in (outcome.new_profile, outcome.updated_profile):
            if profile is not None:
                self._profiles[profile.id] = profile
        if outcome.new_profile is not None:
            self._new_profiles.add(outcome.new_profile.id)
        for session in (outcome.new_session, outcome.updated_session):
            if session is not None:
                self._sessions[session.id] = session
        if outcome.new_session is not None:
            self._new_sessions.add(outcome.new_session.id)
        for event in outcome.tracked_events:
            self._stored[event.source_id, event.id] = StoredEventRef(
                event.profile_id, event.session_id
            )
            self._tracked.append(row(event))
        count = len(outcome.system_events)
        if self._allocate is None:
            positions: Sequence[int] = range(self.last_position + 1, self.last_position + 1 + count)
        else:
            positions = self._allocate(self._connection, count) if count else ()
        if positions:
            self.last_position = positions[-1]
        events = tuple(
            SystemEvent(
                position=position,
                id=str(uuid.uuid4()),
                type=d.type,
                occur_time=d.occur_time,
                profile_id=d.profile_id,
                session_id=d.session_id,
                source_id=d.source_id,
                properties=d.properties,
                trace_context=outcome.trace_context,
            )
            for position, d in zip(positions, outcome.system_events, strict=True)
        )
        self.appended.extend(events)
        self.writes += 1
        return events

    def tracked_by_source(self) -> dict[str, int]:
        """How many tracked events each source has staged."""
        counts: dict[str, int] = {}
        for values in self._tracked:
            source_id = values[_TRACKED_SOURCE]
            counts[source_id] = counts.get(source_id, 0) + 1
        return counts

    def flush(self) -> None:
        """Write everything staged: one bulk statement per table and kind (storage/bulk.py)."""
        connection = self._connection
        for inserts, updates, staged, new in (
            (_PROFILE_INSERTS, _PROFILE_UPDATES, self._profiles, self._new_profiles),
            (_SESSION_INSERTS, _SESSION_UPDATES, self._sessions, self._new_sessions),
        ):
            inserts.execute(connection, [row(v) for k, v in staged.items() if k in new])
            updates.execute(connection, [row(v) for k, v in staged.items() if k not in new])
        _TRACKED_INSERTS.execute(connection, self._tracked)
        rows = []
        for event in self.appended:
            data = self._encode(event)
            rows.append((*row(event), data))
            self.encoded.append(EncodedEvent(event.position, data))
        _SYSTEM_EVENT_INSERTS.execute(connection, rows)


def _take_cached(
    ids: Iterable[str], cache: BoundedMap[Any] | None, loaded: dict[str, Any]
) -> list[str]:
    """Copy the cached rows among `ids` into `loaded`; the ids left to read."""
    if cache is None:
        return list(ids)
    unread = []
    for i in ids:
        found = cache.get(i)
        if found is None:
            unread.append(i)
        else:
            loaded[i] = found
    return unread


def _update_by_key(table: Table) -> Update:
    # Every column but the key from a bound parameter of its own name: the rows are whole
    # domain records, so every update sets every column.
    columns: dict[str, Any] = {c.name: bindparam(c.name) for c in table.c if c.name != "id"}
    return update(table).where(table.c.id == bindparam("key")).values(columns)


def _renamed(cls: type, **renames: str) -> tuple[str, ...]:
    # A record's field names as the statement's bind names: `row(record)` gives their values.
    return tuple(renames.get(name, name) for name in field_names(cls))


# Built once, and each compiled once per dialect: see bulk.py and lookup.py.
_SESSIONS = Lookup(statements.sessions_by_ids)
_PROFILES = Lookup(statements.profiles_by_ids)
_STORED = Lookup(statements.stored_events)
_PROFILE_INSERTS = Bulk(insert(statements.profiles), field_names(Profile))
_PROFILE_UPDATES = Bulk(_update_by_key(statements.profiles), _renamed(Profile, id="key"))
_SESSION_INSERTS = Bulk(insert(statements.sessions), field_names(Session))
_SESSION_UPDATES = Bulk(_update_by_key(statements.sessions), _renamed(Session, id="key"))
_TRACKED_SOURCE = field_names(TrackedEvent).index("source_id")
_TRACKED_INSERTS = Bulk(insert(statements.tracked_events), _renamed(TrackedEvent, id="event_id"))
_SYSTEM_EVENT_INSERTS = Bulk(
    insert(statements.system_events), (*field_names(SystemEvent), "encoded")
)
