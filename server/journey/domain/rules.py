"""The rules: which state changes and system events a Track, an EndSession or a timeout causes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from journey.domain.errors import FailedPrecondition
from journey.domain.model import (
    NO_TRACE_CONTEXT,
    NewTrackedEvent,
    Profile,
    Session,
    SessionState,
    SystemEventDraft,
    SystemEventType,
    TrackedEvent,
)
from journey.domain.policy import Policy

NewId = Callable[[], str]


class TrackCommand(NamedTuple):
    """A Track call, already validated.

    This and Outcome are named tuples: one of each per call, where a frozen dataclass's
    __init__ sets every field through object.__setattr__.
    """

    source_id: str
    profile_id: str
    session_id: str
    events: Sequence[NewTrackedEvent]
    # The W3C trace context the system events it causes carry (empty: none).
    trace_context: Mapping[str, str] = NO_TRACE_CONTEXT


class StoredEventRef(NamedTuple):
    """Where an already stored tracked event went, for answering a retried Track.

    A named tuple: storage makes one per tracked event (see TrackCommand).
    """

    profile_id: str
    session_id: str


class Outcome(NamedTuple):
    """What a call changes: the rows to write and the system events to append, in order.

    A named tuple: see TrackCommand.
    """

    profile_id: str
    session_id: str
    event_ids: tuple[str, ...] = ()
    new_profile: Profile | None = None
    updated_profile: Profile | None = None
    new_session: Session | None = None
    updated_session: Session | None = None
    tracked_events: tuple[TrackedEvent, ...] = ()
    system_events: tuple[SystemEventDraft, ...] = ()
    # The W3C trace context every one of `system_events` carries (empty: none).
    trace_context: Mapping[str, str] = NO_TRACE_CONTEXT


def profile_id_to_load(command: TrackCommand, session: Session | None) -> str:
    """The profile a Track call acts on, so storage can load it before the rules run."""
    return session.profile_id if session is not None else command.profile_id


def rfc3339(moment: datetime) -> str:
    """Format a UTC time the way system-event properties carry times."""
    return moment.isoformat().replace("+00:00", "Z")


def decide_track(
    command: TrackCommand,
    session: Session | None,
    profile: Profile | None,
    stored: Mapping[str, StoredEventRef],
    now: datetime,
    policy: Policy,
    new_id: NewId,
) -> Outcome:
    """Apply rules 1-3, 5 and 7-10 to a Track call.

    `session` is the session the call names (None when unknown or unnamed), `profile` the one
    `profile_id_to_load` named (None when unknown), and `stored` maps the call's client event
    ids that this source already stored to where they went.
    """
    if session is not None and command.profile_id and command.profile_id != session.profile_id:
        raise FailedPrecondition(
            f"session {session.id!r} belongs to profile {session.profile_id!r}, "
            f"not {command.profile_id!r}"
        )

    fresh: list[NewTrackedEvent] = []
    event_ids: list[str] = []
    seen: set[str] = set()
    for event in command.events:
        if event.id and (event.id in stored or event.id in seen):
            event_ids.append(event.id)
            continue
        event_id = event.id or new_id()
        seen.add(event_id)
        event_ids.append(event_id)
        # Most clients send ids: copy the event only when it needs one.
        fresh.append(event if event.id else event._replace(id=event_id))

    if not fresh:
        # A retry of a call that was stored already: answer as the original call did.
        first = stored[command.events[0].id]
        return Outcome(first.profile_id, first.session_id, tuple(event_ids))

    drafts: list[SystemEventDraft] = []
    source_id = command.source_id
    expired: Session | None = None
    if session is not None:
        # The sweeper may not have reached this session yet (it wakes twice a second, and a
        # restart may have left it far behind): a timeout that ran out counts before this call.
        expiry = decide_expiry(session, now, policy)
        if expiry is not None:
            drafts.extend(expiry.system_events)
            session = expired = expiry.updated_session

    def emit(kind: SystemEventType, profile_id: str, session_id: str, **props: Any) -> None:
        drafts.append(SystemEventDraft(kind, now, profile_id, session_id, source_id, props))

    def visit_started(profile: Profile, session_id: str) -> None:
        emit(
            SystemEventType.VISIT_STARTED,
            profile.id,
            session_id,
            trigger_event_types=trigger_types,
            visit_number=profile.visit_count,
        )

    new_profile: Profile | None = None
    if profile is None:
        profile = Profile(
            id=profile_id_to_load(command, session) or new_id(),
            create_time=now,
            last_activity_time=now,
            visit_count=0,
            session_count=0,
        )
        new_profile = profile
        emit(SystemEventType.PROFILE_CREATED, profile.id, "")

    n = len(fresh)
    trigger_types = list(dict.fromkeys(e.type for e in fresh))
    new_session: Session | None = None
    # A session that timed out just now is written back closed, beside its successor.
    updated_session: Session | None = expired
    if session is None or session.state is SessionState.CLOSED:
        previous = session
        session_id = command.session_id if previous is None and command.session_id else new_id()
        profile = profile._replace(
            visit_count=profile.visit_count + 1, session_count=profile.session_count + 1
        )
        new_session = Session(
            id=session_id,
            profile_id=profile.id,
            source_id=source_id,
            state=SessionState.ACTIVE,
            open_time=now,
            last_activity_time=now,
            close_time=None,
            event_count=n,
            visit_count=1,
            visit_start_time=now,
            visit_event_count=n,
        )
        opened: dict[str, Any] = {}
        if previous is not None:
            opened["previous_session_id"] = previous.id
        emit(SystemEventType.SESSION_OPENED, profile.id, session_id, **opened)
        visit_started(profile, session_id)
        current = new_session
    elif session.state is SessionState.IDLE:
        profile = profile._replace(visit_count=profile.visit_count + 1)
        updated_session = session._replace(
            state=SessionState.ACTIVE,
            last_activity_time=now,
            event_count=session.event_count + n,
            visit_count=session.visit_count + 1,
            visit_start_time=now,
            visit_event_count=n,
        )
        visit_started(profile, session.id)
        current = updated_session
    else:
        updated_session = session._replace(
            last_activity_time=now,
            event_count=session.event_count + n,
            visit_event_count=session.visit_event_count + n,
        )
        current = updated_session

    profile = profile._replace(last_activity_time=now)
    if new_profile is not None:
        new_profile, updated_profile = profile, None
    else:
        updated_profile = profile

    tracked = tuple(
        TrackedEvent(
            id=e.id,
            source_id=source_id,
            type=e.type,
            properties=e.properties,
            occur_time=e.occur_time or now,
            receive_time=now,
            profile_id=profile.id,
            session_id=current.id,
        )
        for e in fresh
    )
    return Outcome(
        profile_id=profile.id,
        session_id=current.id,
        event_ids=tuple(event_ids),
        new_profile=new_profile,
        updated_profile=updated_profile,
        new_session=new_session,
        updated_session=updated_session,
        tracked_events=tracked,
        system_events=_enabled(drafts, policy),
        trace_context=command.trace_context,
    )


def visit_deadline(session: Session, policy: Policy) -> datetime:
    """When the session's current visit ends if nothing more is tracked."""
    return session.last_activity_time + policy.visit_timeout


def close_deadline(session: Session, policy: Policy) -> datetime:
    """When the session closes if nothing more is tracked."""
    return session.last_activity_time + policy.session_timeout


def decide_expiry(
    session: Session,
    now: datetime,
    policy: Policy,
    trace_context: Mapping[str, str] = NO_TRACE_CONTEXT,
) -> Outcome | None:
    """Apply the timeout rules 4 and 6; None when nothing is due at `now`.

    `trace_context` is the sweep's, when it is traced.
    """
    if session.state is SessionState.CLOSED:
        return None
    drafts: list[SystemEventDraft] = []
    changed = session
    if session.state is SessionState.ACTIVE and now >= visit_deadline(session, policy):
        ended_at = visit_deadline(session, policy)
        drafts.append(_visit_ended(session, ended_at, session.source_id))
        changed = changed._replace(state=SessionState.IDLE)
    if now >= close_deadline(session, policy):
        closed_at = close_deadline(session, policy)
        drafts.append(_session_closed(session, closed_at, session.source_id, "timeout"))
        changed = changed._replace(state=SessionState.CLOSED, close_time=closed_at)
    if changed is session:
        return None
    return Outcome(
        profile_id=session.profile_id,
        session_id=session.id,
        updated_session=changed,
        system_events=_enabled(drafts, policy),
        trace_context=trace_context,
    )


def decide_end(
    session: Session,
    reason: str,
    now: datetime,
    policy: Policy,
    trace_context: Mapping[str, str] = NO_TRACE_CONTEXT,
) -> Outcome:
    """Apply rule 6 to EndSession: `visit-ended` if a visit is open, then `session-closed`.

    `trace_context` is the EndSession call's: the events carry it.
    """
    if session.state is SessionState.CLOSED:
        raise FailedPrecondition(f"session {session.id!r} is already closed")
    drafts: list[SystemEventDraft] = []
    if session.state is SessionState.ACTIVE:
        drafts.append(_visit_ended(session, now, session.source_id))
    drafts.append(_session_closed(session, now, session.source_id, reason or "ended"))
    closed = session._replace(state=SessionState.CLOSED, close_time=now)
    return Outcome(
        profile_id=session.profile_id,
        session_id=session.id,
        updated_session=closed,
        system_events=_enabled(drafts, policy),
        trace_context=trace_context,
    )


def _visit_ended(session: Session, at: datetime, source_id: str) -> SystemEventDraft:
    duration = (session.last_activity_time - session.visit_start_time).total_seconds()
    return SystemEventDraft(
        SystemEventType.VISIT_ENDED,
        at,
        session.profile_id,
        session.id,
        source_id,
        {
            "visit_start_time": rfc3339(session.visit_start_time),
            "last_activity_time": rfc3339(session.last_activity_time),
            "duration_seconds": duration,
            "event_count": session.visit_event_count,
        },
    )


def _session_closed(
    session: Session, at: datetime, source_id: str, reason: str
) -> SystemEventDraft:
    return SystemEventDraft(
        SystemEventType.SESSION_CLOSED,
        at,
        session.profile_id,
        session.id,
        source_id,
        {"reason": reason},
    )


def _enabled(drafts: Sequence[SystemEventDraft], policy: Policy) -> tuple[SystemEventDraft, ...]:
    # A switched-off type is dropped only here, after every state change was decided,
    # so the state evolves exactly as if it had been emitted.
    return tuple(d for d in drafts if d.type in policy.enabled_types)
