"""The application core: runs the domain rules inside storage units of work."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import NamedTuple

from journey.clock import Clock
from journey.domain.errors import FailedPrecondition, NotFound
from journey.domain.model import (
    NO_TRACE_CONTEXT,
    EncodedEvent,
    Profile,
    Session,
    SystemEvent,
    SystemEventFilter,
)
from journey.domain.policy import Policy
from journey.domain.rules import (
    NewId,
    TrackCommand,
    decide_end,
    decide_expiry,
    decide_track,
    profile_id_to_load,
)
from journey.storage.queries import Queries
from journey.storage.unit_of_work import Keys, UnitOfWork
from journey.storage.writer import Writer


class TrackResult(NamedTuple):
    """What a Track call did (a named tuple, one per call: see TrackCommand)."""

    profile_id: str
    session_id: str
    event_ids: tuple[str, ...]
    system_events: tuple[SystemEvent, ...]


def _new_uuid() -> str:
    return str(uuid.uuid4())


class Journal:
    """Tracks events, ends and expires sessions, and reads state back."""

    def __init__(
        self,
        writer: Writer,
        queries: Queries,
        policy: Policy,
        sources: Mapping[str, bool],
        clock: Clock,
        new_id: NewId = _new_uuid,
    ) -> None:
        self._writer = writer
        self._queries = queries
        self._policy = policy
        # Registered source ids and whether each is enabled; empty accepts any source.
        self._sources = sources
        self._clock = clock
        self._new_id = new_id

    def _check_source(self, source_id: str) -> None:
        """Refuse an unregistered or disabled source when sources are registered."""
        if not self._sources:
            return
        enabled = self._sources.get(source_id)
        if enabled is None:
            raise NotFound(f"source {source_id!r} is not registered")
        if not enabled:
            raise FailedPrecondition(f"source {source_id!r} is disabled")

    async def track(self, command: TrackCommand) -> TrackResult:
        """Store the events and the system events they cause, atomically."""
        self._check_source(command.source_id)

        def work(uow: UnitOfWork) -> TrackResult:
            session = uow.session(command.session_id)
            profile = uow.profile(profile_id_to_load(command, session))
            client_ids = {e.id for e in command.events if e.id}
            stored = uow.stored_events(command.source_id, client_ids)
            outcome = decide_track(
                command, session, profile, stored, self._clock.now(), self._policy, self._new_id
            )
            events = uow.apply(outcome)
            return TrackResult(outcome.profile_id, outcome.session_id, outcome.event_ids, events)

        source_id = command.source_id
        keys = Keys(
            (command.session_id,) if command.session_id else (),
            (command.profile_id,) if command.profile_id else (),
            tuple([(source_id, e.id) for e in command.events if e.id]),
        )
        return await self._writer.submit(work, keys)

    async def end_session(
        self, session_id: str, reason: str, trace_context: Mapping[str, str] = NO_TRACE_CONTEXT
    ) -> tuple[Session, tuple[SystemEvent, ...]]:
        """Close a session now; the events carry the call's `trace_context`."""

        def work(uow: UnitOfWork) -> tuple[Session, tuple[SystemEvent, ...]]:
            session = uow.session(session_id)
            if session is None:
                raise NotFound(f"session {session_id!r} does not exist")
            outcome = decide_end(session, reason, self._clock.now(), self._policy, trace_context)
            events = uow.apply(outcome)
            assert outcome.updated_session is not None
            return outcome.updated_session, events

        return await self._writer.submit(work, Keys(sessions=(session_id,)))

    async def expire(
        self, session_ids: Collection[str], trace_context: Mapping[str, str] = NO_TRACE_CONTEXT
    ) -> tuple[SystemEvent, ...]:
        """End the visits and close the sessions among these whose timeouts have run out.

        The events carry `trace_context`: the sweep's, when it is traced.
        """

        def work(uow: UnitOfWork) -> tuple[SystemEvent, ...]:
            now = self._clock.now()
            outcomes = [
                decide_expiry(s, now, self._policy, trace_context)
                for s in uow.sessions(session_ids)
            ]
            events: list[SystemEvent] = []
            for outcome in outcomes:
                if outcome is not None:
                    events.extend(uow.apply(outcome))
            return tuple(events)

        # No keys to preload: the work reads its sessions in one query, and preloading would
        # also read their profiles, which expiry never needs.
        return await self._writer.submit(work)

    async def session(self, session_id: str) -> Session:
        """A session, or NotFound."""
        session = await self._queries.session(session_id)
        if session is None:
            raise NotFound(f"session {session_id!r} does not exist")
        return session

    async def profile(self, profile_id: str) -> Profile:
        """A profile, or NotFound."""
        profile = await self._queries.profile(profile_id)
        if profile is None:
            raise NotFound(f"profile {profile_id!r} does not exist")
        return profile

    async def system_events(
        self,
        event_filter: SystemEventFilter,
        after: int,
        limit: int,
        start_time: datetime | None,
        end_time: datetime | None,
    ) -> list[EncodedEvent]:
        """A page of the log, each event as it was encoded when committed."""
        return await self._queries.encoded_system_events(
            event_filter, after, limit, start_time=start_time, end_time=end_time
        )
