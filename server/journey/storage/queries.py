"""Read-only queries, each in its own short session: lookups, log pages and due timeouts."""

from __future__ import annotations

from datetime import datetime, timedelta

from journey.domain.model import (
    EncodedEvent,
    Profile,
    Session,
    SessionState,
    SystemEvent,
    SystemEventFilter,
)
from journey.domain.policy import Policy
from journey.storage import statements
from journey.storage.database import Database
from journey.storage.failures import OnFailure, as_unavailable, observed
from journey.storage.records import profile_from_row, session_from_row, system_event_from_row


class Queries:
    """The read side of storage."""

    def __init__(self, database: Database, on_failure: OnFailure | None = None) -> None:
        self._database = database
        self._on_failure = on_failure

    # The reads that answer calls raise a storage failure as Unavailable; the sweeper's
    # reads just retry on its next round. Either way `on_failure` hears of it.

    async def session(self, session_id: str) -> Session | None:
        """The session with this id, if stored."""
        with as_unavailable(self._on_failure):
            async with self._database.sessions() as s:
                row = (await s.execute(statements.session_by_id(session_id))).first()
        return session_from_row(row) if row is not None else None

    async def profile(self, profile_id: str) -> Profile | None:
        """The profile with this id, if stored."""
        with as_unavailable(self._on_failure):
            async with self._database.sessions() as s:
                row = (await s.execute(statements.profile_by_id(profile_id))).first()
        return profile_from_row(row) if row is not None else None

    async def encoded_system_events(
        self,
        event_filter: SystemEventFilter,
        after: int,
        limit: int,
        *,
        up_to: int | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
    ) -> list[EncodedEvent]:
        """Up to `limit` matching events with `after < position <= up_to` as they are sent.

        What every reader is given: only these bytes hold an event's trace context.
        """
        query = statements.system_events_page(
            event_filter, after, limit, up_to, start_time, end_time, encoded=True
        )
        with as_unavailable(self._on_failure):
            async with self._database.sessions() as s:
                rows = (await s.execute(query)).all()
        return [EncodedEvent(position, data) for position, data in rows]

    async def head(self) -> int:
        """The last position committed, by any process (0 when there is none)."""
        with as_unavailable():
            async with self._database.sessions() as s:
                last = (await s.execute(statements.head())).scalar()
        return int(last or 0)

    async def committed_after(
        self, after: int, limit: int
    ) -> list[tuple[SystemEvent, EncodedEvent]]:
        """Up to `limit` events after `after` in position order, each also as it is sent."""
        with as_unavailable():
            async with self._database.sessions() as s:
                rows = (await s.execute(statements.committed_after(after, limit))).all()
        return [(system_event_from_row(r), EncodedEvent(r.position, r.encoded)) for r in rows]

    async def due_sessions(self, now: datetime, policy: Policy, limit: int) -> list[str]:
        """Ids of open sessions whose visit or session timeout has run out at `now`."""
        ids: list[str] = []
        with observed(self._on_failure):
            async with self._database.sessions() as s:
                for state, timeout in _timeouts(policy):
                    query = statements.due_sessions(state, now - timeout, limit - len(ids))
                    ids.extend((await s.scalars(query)).all())
                    if len(ids) >= limit:
                        break
        return ids

    async def next_deadline(self, policy: Policy) -> datetime | None:
        """The earliest moment at which some open session's timeout runs out."""
        deadlines = []
        with observed(self._on_failure):
            async with self._database.sessions() as s:
                for state, timeout in _timeouts(policy):
                    oldest = (await s.execute(statements.oldest_activity(state))).scalar()
                    if oldest is not None:
                        deadlines.append(oldest + timeout)
        return min(deadlines, default=None)


def _timeouts(policy: Policy) -> list[tuple[int, timedelta]]:
    # An ACTIVE session's visit times out first; an IDLE one's session does.
    return [
        (int(SessionState.ACTIVE), policy.visit_timeout),
        (int(SessionState.IDLE), policy.session_timeout),
    ]
