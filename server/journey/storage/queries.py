"""Read-only queries, each in its own short session: lookups, log pages and due timeouts."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Select, Table, func, select

from journey.domain.model import Profile, Session, SessionState, SystemEvent, SystemEventFilter
from journey.domain.policy import Policy
from journey.storage.database import Database
from journey.storage.records import profile_from_row, session_from_row, system_event_from_row
from journey.storage.schema import ProfileRow, SessionRow, SystemEventRow

_profiles = cast(Table, ProfileRow.__table__)
_sessions = cast(Table, SessionRow.__table__)
_system = cast(Table, SystemEventRow.__table__)


class Queries:
    """The read side of storage."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def session(self, session_id: str) -> Session | None:
        """The session with this id, if stored."""
        async with self._database.sessions() as s:
            row = (await s.execute(select(_sessions).where(_sessions.c.id == session_id))).first()
        return session_from_row(row) if row is not None else None

    async def profile(self, profile_id: str) -> Profile | None:
        """The profile with this id, if stored."""
        async with self._database.sessions() as s:
            row = (await s.execute(select(_profiles).where(_profiles.c.id == profile_id))).first()
        return profile_from_row(row) if row is not None else None

    async def system_events(
        self,
        event_filter: SystemEventFilter,
        after: int,
        limit: int,
        *,
        up_to: int | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
    ) -> list[SystemEvent]:
        """Up to `limit` matching events with `after < position <= up_to`, in position order."""
        query = system_events_query(event_filter, after, limit, up_to, start_time, end_time)
        async with self._database.sessions() as s:
            rows = (await s.execute(query)).all()
        return [system_event_from_row(row) for row in rows]

    async def due_sessions(self, now: datetime, policy: Policy, limit: int) -> list[str]:
        """Ids of open sessions whose visit or session timeout has run out at `now`."""
        async with self._database.sessions() as s:
            ids: list[str] = []
            for state, timeout in _timeouts(policy):
                query = (
                    select(_sessions.c.id)
                    .where(
                        _sessions.c.state == state, _sessions.c.last_activity_time <= now - timeout
                    )
                    .order_by(_sessions.c.last_activity_time)
                    .limit(limit - len(ids))
                )
                ids.extend((await s.scalars(query)).all())
                if len(ids) >= limit:
                    break
        return ids

    async def next_deadline(self, policy: Policy) -> datetime | None:
        """The earliest moment at which some open session's timeout runs out."""
        deadlines = []
        async with self._database.sessions() as s:
            for state, timeout in _timeouts(policy):
                query = select(func.min(_sessions.c.last_activity_time)).where(
                    _sessions.c.state == state
                )
                oldest = (await s.execute(query)).scalar()
                if oldest is not None:
                    deadlines.append(oldest + timeout)
        return min(deadlines, default=None)


def system_events_query(
    event_filter: SystemEventFilter,
    after: int,
    limit: int,
    up_to: int | None = None,
    start_time: datetime | None = None,
    end_time: datetime | None = None,
) -> Select[tuple[object, ...]]:
    """The page query, every filter pushed into SQL; its own function so it can be EXPLAINed."""
    c = _system.c
    query = select(_system).where(c.position > after)
    if up_to is not None:
        query = query.where(c.position <= up_to)
    if event_filter.types:
        query = query.where(c.type.in_(sorted(int(t) for t in event_filter.types)))
    if event_filter.profile_id:
        query = query.where(c.profile_id == event_filter.profile_id)
    if event_filter.session_id:
        query = query.where(c.session_id == event_filter.session_id)
    if event_filter.source_id:
        query = query.where(c.source_id == event_filter.source_id)
    if start_time is not None:
        query = query.where(c.occur_time >= start_time)
    if end_time is not None:
        query = query.where(c.occur_time < end_time)
    return query.order_by(c.position).limit(limit)


def _timeouts(policy: Policy) -> list[tuple[int, timedelta]]:
    # An ACTIVE session's visit times out first; an IDLE one's session does.
    return [
        (int(SessionState.ACTIVE), policy.visit_timeout),
        (int(SessionState.IDLE), policy.session_timeout),
    ]
