"""One transaction's reads and writes: what the rules need to decide, and applying their outcome."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncSession

from journey.domain.model import Profile, Session, SystemEvent
from journey.domain.rules import Outcome, StoredEventRef
from journey.storage import statements
from journey.storage.records import profile_from_row, session_from_row, values

_profiles = statements.profiles
_sessions = statements.sessions
_tracked = statements.tracked_events
_system = statements.system_events


class UnitOfWork:
    """Reads and writes inside the writer's open transaction.

    Reads go through Core statements rather than the ORM identity map, so a later call in the
    same group commit sees the rows an earlier call wrote.
    """

    def __init__(self, session: AsyncSession, next_position: Callable[[], int]) -> None:
        self._session = session
        self._next_position = next_position
        self.appended: list[SystemEvent] = []
        self.writes = 0

    async def session(self, session_id: str) -> Session | None:
        """The session with this id, if stored."""
        if not session_id:
            return None
        row = (await self._session.execute(statements.session_by_id(session_id))).first()
        return session_from_row(row) if row is not None else None

    async def sessions(self, session_ids: Collection[str]) -> list[Session]:
        """The stored sessions among these ids."""
        result = await self._session.execute(statements.sessions_by_ids(session_ids))
        return [session_from_row(row) for row in result]

    async def profile(self, profile_id: str) -> Profile | None:
        """The profile with this id, if stored."""
        if not profile_id:
            return None
        row = (await self._session.execute(statements.profile_by_id(profile_id))).first()
        return profile_from_row(row) if row is not None else None

    async def stored_events(
        self, source_id: str, event_ids: Collection[str]
    ) -> dict[str, StoredEventRef]:
        """Which of these client event ids this source already stored, and where they went."""
        if not event_ids:
            return {}
        result = await self._session.execute(statements.stored_events(source_id, event_ids))
        return {row.event_id: StoredEventRef(row.profile_id, row.session_id) for row in result}

    async def apply(self, outcome: Outcome) -> tuple[SystemEvent, ...]:
        """Write what the rules decided; returns the system events with their positions."""
        execute = self._session.execute
        if outcome.new_profile is not None:
            await execute(insert(_profiles).values(values(outcome.new_profile)))
        if outcome.updated_profile is not None:
            await execute(_update(_profiles, values(outcome.updated_profile)))
        if outcome.new_session is not None:
            await execute(insert(_sessions).values(values(outcome.new_session)))
        if outcome.updated_session is not None:
            await execute(_update(_sessions, values(outcome.updated_session)))
        if outcome.tracked_events:
            rows = [values(e) for e in outcome.tracked_events]
            for row in rows:
                row["event_id"] = row.pop("id")
            await execute(insert(_tracked), rows)
        events = tuple(
            SystemEvent(
                position=self._next_position(),
                id=str(uuid.uuid4()),
                type=d.type,
                occur_time=d.occur_time,
                profile_id=d.profile_id,
                session_id=d.session_id,
                source_id=d.source_id,
                properties=d.properties,
            )
            for d in outcome.system_events
        )
        if events:
            await execute(insert(_system), [values(e) for e in events])
        self.appended.extend(events)
        self.writes += 1
        return events


def _update(table: Any, row: dict[str, Any]) -> Any:
    key = row.pop("id")
    return update(table).where(table.c.id == key).values(row)
