"""Unit tests of the pure domain rules (journey.domain.rules): no server, no database."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from journey.domain.errors import FailedPrecondition
from journey.domain.model import (
    NewTrackedEvent,
    Profile,
    Session,
    SessionState,
    SystemEventType,
)
from journey.domain.policy import Policy
from journey.domain.rules import (
    NewId,
    Outcome,
    StoredEventRef,
    TrackCommand,
    decide_end,
    decide_expiry,
    decide_track,
    profile_id_to_load,
)

PC = SystemEventType.PROFILE_CREATED
SO = SystemEventType.SESSION_OPENED
VS = SystemEventType.VISIT_STARTED
VE = SystemEventType.VISIT_ENDED
SC = SystemEventType.SESSION_CLOSED
ACTIVE = SessionState.ACTIVE
IDLE = SessionState.IDLE
CLOSED = SessionState.CLOSED

NOW = datetime(2025, 3, 14, 12, 0, 0, tzinfo=UTC)
VISIT_TIMEOUT = timedelta(minutes=30)
SESSION_TIMEOUT = timedelta(hours=24)
POLICY = Policy(visit_timeout=VISIT_TIMEOUT, session_timeout=SESSION_TIMEOUT)

# The stock session's current visit: started 11:40, last tracked event 11:55.
VISIT_START = NOW - timedelta(minutes=20)
LAST_ACTIVITY = NOW - timedelta(minutes=5)
VISIT_DEADLINE = LAST_ACTIVITY + VISIT_TIMEOUT  # 12:25
CLOSE_DEADLINE = LAST_ACTIVITY + SESSION_TIMEOUT  # next day 11:55


def counter_ids(prefix: str = "id") -> NewId:
    """Deterministic ids: id-1, id-2, ..."""
    counter = itertools.count(1)

    def new_id() -> str:
        return f"{prefix}-{next(counter)}"

    return new_id


def no_ids() -> str:
    """A new_id for calls that must not mint any id."""
    raise AssertionError("new_id must not be called")


def event(
    event_id: str = "", event_type: str = "page-view", occur_time: datetime | None = None
) -> NewTrackedEvent:
    """A tracked event as a client would send it."""
    return NewTrackedEvent(id=event_id, type=event_type, properties=b"\x01", occur_time=occur_time)


def command(
    *events: NewTrackedEvent, source_id: str = "web", profile_id: str = "", session_id: str = ""
) -> TrackCommand:
    """A validated Track call."""
    return TrackCommand(
        source_id=source_id, profile_id=profile_id, session_id=session_id, events=events
    )


def make_profile(**overrides: Any) -> Profile:
    """Profile p-1: 4 visits over 2 sessions so far."""
    profile = Profile(
        id="p-1",
        create_time=NOW - timedelta(days=10),
        last_activity_time=LAST_ACTIVITY,
        visit_count=4,
        session_count=2,
    )
    return profile._replace(**overrides)


def make_session(state: SessionState = ACTIVE, **overrides: Any) -> Session:
    """Session s-1 of p-1 from source web: 7 events, in its 2nd visit (3 events in it)."""
    session = Session(
        id="s-1",
        profile_id="p-1",
        source_id="web",
        state=state,
        open_time=NOW - timedelta(hours=2),
        last_activity_time=LAST_ACTIVITY,
        close_time=NOW - timedelta(minutes=1) if state is CLOSED else None,
        event_count=7,
        visit_count=2,
        visit_start_time=VISIT_START,
        visit_event_count=3,
    )
    return session._replace(**overrides)


def track(
    cmd: TrackCommand,
    session: Session | None = None,
    profile: Profile | None = None,
    stored: Mapping[str, StoredEventRef] | None = None,
    now: datetime = NOW,
    policy: Policy = POLICY,
    new_id: NewId | None = None,
) -> Outcome:
    """decide_track with the fixed clock, the default policy and counter ids."""
    return decide_track(cmd, session, profile, stored or {}, now, policy, new_id or counter_ids())


def types_of(outcome: Outcome) -> list[SystemEventType]:
    """The types of the outcome's system events, in order."""
    return [d.type for d in outcome.system_events]


# Rule 1: which profile a Track call acts on.


def test_rule_1_empty_profile_id_on_known_session_uses_the_sessions_profile() -> None:
    session = make_session(IDLE)
    cmd = command(event("e-1"), session_id="s-1")
    assert profile_id_to_load(cmd, session) == "p-1"

    outcome = track(cmd, session, make_profile(), new_id=no_ids)

    assert outcome.profile_id == "p-1"
    assert outcome.session_id == "s-1"
    assert outcome.new_profile is None
    assert outcome.updated_profile is not None
    assert outcome.updated_profile.id == "p-1"
    assert PC not in types_of(outcome)
    assert [d.profile_id for d in outcome.system_events] == ["p-1"]
    assert [t.profile_id for t in outcome.tracked_events] == ["p-1"]


def test_rule_1_empty_profile_id_on_new_session_creates_a_profile_with_a_new_id() -> None:
    cmd = command(event("e-1"))
    assert profile_id_to_load(cmd, None) == ""

    outcome = track(cmd, None, None)

    assert outcome.new_profile == Profile(
        id="id-1", create_time=NOW, last_activity_time=NOW, visit_count=1, session_count=1
    )
    assert outcome.updated_profile is None
    assert outcome.profile_id == "id-1"
    assert types_of(outcome) == [PC, SO, VS]
    created = outcome.system_events[0]
    assert (created.profile_id, created.session_id, created.source_id) == ("id-1", "", "web")
    assert created.occur_time == NOW
    assert created.properties == {}


def test_rule_1_unseen_profile_id_creates_a_profile_with_exactly_that_id() -> None:
    cmd = command(event("e-1"), profile_id="p-new", session_id="s-new")
    assert profile_id_to_load(cmd, None) == "p-new"

    outcome = track(cmd, None, None, new_id=no_ids)

    assert outcome.profile_id == "p-new"
    assert outcome.new_profile is not None
    assert outcome.new_profile.id == "p-new"
    assert types_of(outcome) == [PC, SO, VS]
    assert outcome.system_events[0].profile_id == "p-new"
    assert all(d.profile_id == "p-new" for d in outcome.system_events)


def test_rule_1_known_profile_on_new_session_is_not_created_again() -> None:
    profile = make_profile()
    cmd = command(event("e-1"), profile_id="p-1")

    outcome = track(cmd, None, profile)

    assert types_of(outcome) == [SO, VS]
    assert outcome.new_profile is None
    assert outcome.updated_profile == profile._replace(
        last_activity_time=NOW, visit_count=5, session_count=3
    )


# Rule 2: opening a session.


def test_rule_2_empty_session_id_opens_a_session_with_a_new_id() -> None:
    outcome = track(command(event("e-1"), event("e-2", "click")))

    assert outcome.session_id == "id-2"
    assert outcome.new_session == Session(
        id="id-2",
        profile_id="id-1",
        source_id="web",
        state=ACTIVE,
        open_time=NOW,
        last_activity_time=NOW,
        close_time=None,
        event_count=2,
        visit_count=1,
        visit_start_time=NOW,
        visit_event_count=2,
    )
    assert outcome.updated_session is None
    assert types_of(outcome)[1:] == [SO, VS]
    assert [d.session_id for d in outcome.system_events[1:]] == ["id-2", "id-2"]


def test_rule_2_unknown_session_id_opens_a_session_with_exactly_that_id() -> None:
    outcome = track(
        command(event("e-1"), session_id="s-given"), None, make_profile(), new_id=no_ids
    )

    assert outcome.session_id == "s-given"
    assert outcome.new_session is not None
    assert outcome.new_session.id == "s-given"
    assert outcome.new_session.profile_id == "p-1"
    assert types_of(outcome) == [SO, VS]
    opened = outcome.system_events[0]
    assert (opened.session_id, opened.profile_id, opened.occur_time) == ("s-given", "p-1", NOW)
    assert opened.properties == {}
    assert [t.session_id for t in outcome.tracked_events] == ["s-given"]


def test_rule_2_order_is_profile_created_session_opened_visit_started() -> None:
    outcome = track(command(event("e-1"), profile_id="p-9", session_id="s-9"))

    assert types_of(outcome) == [PC, SO, VS]
    assert [(d.profile_id, d.session_id) for d in outcome.system_events] == [
        ("p-9", ""),
        ("p-9", "s-9"),
        ("p-9", "s-9"),
    ]
    assert [d.occur_time for d in outcome.system_events] == [NOW, NOW, NOW]


# Rule 3: Track on an ACTIVE session.


def test_rule_3_track_on_active_session_emits_nothing_and_updates_activity() -> None:
    session = make_session(ACTIVE)
    profile = make_profile()
    later = NOW + timedelta(minutes=10)  # still inside the visit (deadline 12:25)

    outcome = track(
        command(event("e-1"), event("e-2"), session_id="s-1"), session, profile, now=later
    )

    assert outcome.system_events == ()
    assert outcome.new_session is None
    assert outcome.updated_session == session._replace(
        last_activity_time=later, event_count=9, visit_event_count=5
    )
    assert outcome.updated_profile == profile._replace(last_activity_time=later)
    assert [(t.id, t.receive_time, t.occur_time) for t in outcome.tracked_events] == [
        ("e-1", later, later),
        ("e-2", later, later),
    ]


def test_rule_3_client_occur_time_is_kept_and_receive_time_is_now() -> None:
    when = NOW - timedelta(seconds=42)
    outcome = track(command(event("e-1", occur_time=when), session_id="s-1"), make_session())

    (tracked,) = outcome.tracked_events
    assert (tracked.occur_time, tracked.receive_time) == (when, NOW)
    assert outcome.updated_session is not None
    assert outcome.updated_session.last_activity_time == NOW


# Rule 4: visit end after visit_timeout.


def test_rule_4_visit_does_not_end_before_visit_timeout() -> None:
    session = make_session(ACTIVE)
    assert decide_expiry(session, VISIT_DEADLINE - timedelta(microseconds=1), POLICY) is None


def test_rule_4_visit_ends_at_visit_timeout_and_session_becomes_idle() -> None:
    session = make_session(ACTIVE)

    outcome = decide_expiry(session, VISIT_DEADLINE, POLICY)

    assert outcome is not None
    assert (outcome.profile_id, outcome.session_id) == ("p-1", "s-1")
    assert outcome.updated_session == session._replace(state=IDLE)
    assert outcome.new_session is None
    assert outcome.new_profile is None
    assert outcome.updated_profile is None
    assert outcome.tracked_events == ()
    (ended,) = outcome.system_events
    assert ended.type is VE
    assert ended.occur_time == datetime(2025, 3, 14, 12, 25, tzinfo=UTC)
    assert (ended.profile_id, ended.session_id, ended.source_id) == ("p-1", "s-1", "web")
    assert ended.properties == {
        "visit_start_time": "2025-03-14T11:40:00Z",
        "last_activity_time": "2025-03-14T11:55:00Z",
        "duration_seconds": 900.0,
        "event_count": 3,
    }


def test_rule_4_late_expiry_still_dates_visit_end_at_the_deadline() -> None:
    outcome = decide_expiry(make_session(ACTIVE), VISIT_DEADLINE + timedelta(hours=3), POLICY)

    assert outcome is not None
    assert types_of(outcome) == [VE]
    assert outcome.system_events[0].occur_time == VISIT_DEADLINE


def test_rule_4_visit_ended_times_keep_fractions_and_are_rfc3339_utc() -> None:
    start = datetime(2025, 3, 14, 11, 40, 0, 250000, tzinfo=UTC)
    last = datetime(2025, 3, 14, 11, 40, 1, 750000, tzinfo=UTC)
    session = make_session(
        ACTIVE, visit_start_time=start, last_activity_time=last, visit_event_count=1
    )

    outcome = decide_expiry(session, last + VISIT_TIMEOUT, POLICY)

    assert outcome is not None
    props = outcome.system_events[0].properties
    assert props["visit_start_time"] == "2025-03-14T11:40:00.250000Z"
    assert props["last_activity_time"] == "2025-03-14T11:40:01.750000Z"
    assert datetime.fromisoformat(props["visit_start_time"]) == start
    assert props["duration_seconds"] == 1.5
    assert props["event_count"] == 1


def test_rule_4_idle_session_has_no_visit_to_end() -> None:
    assert decide_expiry(make_session(IDLE), VISIT_DEADLINE + timedelta(hours=1), POLICY) is None


def test_rule_4_track_after_visit_deadline_on_stale_active_session_ends_the_visit_first() -> None:
    session = make_session(ACTIVE)

    outcome = track(
        command(event("e-1"), session_id="s-1"),
        session,
        make_profile(),
        now=VISIT_DEADLINE + timedelta(milliseconds=300),
    )

    assert types_of(outcome) == [VE, VS]
    assert outcome.system_events[0].occur_time == VISIT_DEADLINE
    assert outcome.updated_session is not None
    assert outcome.updated_session.visit_count == 3


def test_rule_6_track_after_close_deadline_on_stale_session_closes_it_and_opens_a_new_one() -> None:
    session = make_session(ACTIVE)

    outcome = track(
        command(event("e-1"), session_id="s-1"),
        session,
        make_profile(),
        now=CLOSE_DEADLINE + timedelta(hours=1),
    )

    assert types_of(outcome) == [VE, SC, SO, VS]
    assert outcome.session_id != "s-1"


# Rule 5: Track on an IDLE session starts a new visit.


def test_rule_5_track_on_idle_session_starts_a_visit_in_the_same_session() -> None:
    session = make_session(IDLE)
    profile = make_profile()
    later = NOW + timedelta(hours=2)

    outcome = track(
        command(event("e-1"), event("e-2", "click"), session_id="s-1"),
        session,
        profile,
        now=later,
        new_id=no_ids,
    )

    assert types_of(outcome) == [VS]
    started = outcome.system_events[0]
    assert (started.session_id, started.profile_id, started.occur_time) == ("s-1", "p-1", later)
    assert outcome.session_id == "s-1"
    assert outcome.new_session is None
    assert outcome.updated_session == session._replace(
        state=ACTIVE,
        last_activity_time=later,
        event_count=9,
        visit_count=3,
        visit_start_time=later,
        visit_event_count=2,
    )
    assert outcome.updated_profile == profile._replace(last_activity_time=later, visit_count=5)


# Rule 6: session close by timeout or EndSession.


def test_rule_6_idle_session_is_not_closed_before_session_timeout() -> None:
    session = make_session(IDLE)
    assert decide_expiry(session, CLOSE_DEADLINE - timedelta(microseconds=1), POLICY) is None


def test_rule_6_idle_session_closes_at_session_timeout_with_reason_timeout() -> None:
    session = make_session(IDLE)

    outcome = decide_expiry(session, CLOSE_DEADLINE, POLICY)

    assert outcome is not None
    assert types_of(outcome) == [SC]
    closed = outcome.system_events[0]
    assert closed.occur_time == datetime(2025, 3, 15, 11, 55, tzinfo=UTC)
    assert (closed.profile_id, closed.session_id, closed.source_id) == ("p-1", "s-1", "web")
    assert closed.properties == {"reason": "timeout"}
    assert outcome.updated_session == session._replace(state=CLOSED, close_time=CLOSE_DEADLINE)


def test_rule_6_active_session_past_both_deadlines_ends_the_visit_then_closes() -> None:
    session = make_session(ACTIVE)

    outcome = decide_expiry(session, NOW + timedelta(days=3), POLICY)

    assert outcome is not None
    assert types_of(outcome) == [VE, SC]
    ended, closed = outcome.system_events
    assert ended.occur_time == VISIT_DEADLINE
    assert ended.properties["event_count"] == 3
    assert closed.occur_time == CLOSE_DEADLINE
    assert closed.properties == {"reason": "timeout"}
    assert outcome.updated_session == session._replace(state=CLOSED, close_time=CLOSE_DEADLINE)


def test_rule_6_closed_session_never_expires_again() -> None:
    session = make_session(CLOSED)
    assert decide_expiry(session, NOW + timedelta(days=30), POLICY) is None


def test_rule_6_end_session_on_active_session_ends_visit_then_closes_with_reason_ended() -> None:
    session = make_session(ACTIVE)

    outcome = decide_end(session, "", NOW, POLICY)

    assert types_of(outcome) == [VE, SC]
    ended, closed = outcome.system_events
    assert ended.occur_time == NOW
    assert ended.properties == {
        "visit_start_time": "2025-03-14T11:40:00Z",
        "last_activity_time": "2025-03-14T11:55:00Z",
        "duration_seconds": 900.0,
        "event_count": 3,
    }
    assert closed.occur_time == NOW
    assert closed.properties == {"reason": "ended"}
    assert [(d.profile_id, d.session_id, d.source_id) for d in outcome.system_events] == [
        ("p-1", "s-1", "web"),
        ("p-1", "s-1", "web"),
    ]
    assert outcome.updated_session == session._replace(state=CLOSED, close_time=NOW)
    assert (outcome.profile_id, outcome.session_id) == ("p-1", "s-1")


def test_rule_6_end_session_carries_the_given_reason() -> None:
    outcome = decide_end(make_session(ACTIVE), "logout", NOW, POLICY)

    assert types_of(outcome) == [VE, SC]
    assert outcome.system_events[1].properties == {"reason": "logout"}


def test_rule_6_end_session_on_idle_session_only_closes() -> None:
    session = make_session(IDLE)

    outcome = decide_end(session, "", NOW, POLICY)

    assert types_of(outcome) == [SC]
    assert outcome.system_events[0].properties == {"reason": "ended"}
    assert outcome.updated_session == session._replace(state=CLOSED, close_time=NOW)


def test_rule_6_end_session_on_closed_session_is_failed_precondition() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        decide_end(make_session(CLOSED), "", NOW, POLICY)

    assert caught.value.code == "FAILED_PRECONDITION"
    assert caught.value.message == "session 's-1' is already closed"


# Rule 7: Track naming a CLOSED session opens a new one.


def test_rule_7_track_on_closed_session_opens_a_new_session_with_previous_id() -> None:
    closed = make_session(CLOSED)
    profile = make_profile()
    cmd = command(event("e-1"), session_id="s-1")
    assert profile_id_to_load(cmd, closed) == "p-1"

    outcome = track(cmd, closed, profile)

    assert outcome.session_id == "id-1"
    assert outcome.session_id != "s-1"
    assert types_of(outcome) == [SO, VS]
    opened, started = outcome.system_events
    assert opened.session_id == "id-1"
    assert opened.properties == {"previous_session_id": "s-1"}
    assert started.session_id == "id-1"
    assert started.properties == {"trigger_event_types": ["page-view"], "visit_number": 5}
    assert outcome.new_profile is None
    assert outcome.updated_profile == profile._replace(
        last_activity_time=NOW, visit_count=5, session_count=3
    )
    assert outcome.updated_session is None  # the closed session stays as it was
    assert outcome.new_session is not None
    assert (outcome.new_session.profile_id, outcome.new_session.state) == ("p-1", ACTIVE)
    assert outcome.new_session.visit_count == 1
    assert outcome.new_session.event_count == 1
    assert [t.session_id for t in outcome.tracked_events] == ["id-1"]


def test_rule_7_closed_session_gets_a_new_id_even_with_matching_profile_id() -> None:
    outcome = track(
        command(event("e-1"), profile_id="p-1", session_id="s-1"),
        make_session(CLOSED),
        make_profile(),
    )

    assert outcome.session_id == "id-1"
    assert outcome.profile_id == "p-1"
    assert types_of(outcome) == [SO, VS]


# Rule 8: a session of another profile.


def test_rule_8_session_of_another_profile_is_failed_precondition() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        track(
            command(event("e-1"), profile_id="p-2", session_id="s-1"),
            make_session(ACTIVE),
            make_profile(id="p-2"),
            new_id=no_ids,
        )

    assert caught.value.code == "FAILED_PRECONDITION"
    assert caught.value.message == "session 's-1' belongs to profile 'p-1', not 'p-2'"


@pytest.mark.parametrize("state", [IDLE, CLOSED])
def test_rule_8_applies_to_idle_and_closed_sessions_too(state: SessionState) -> None:
    with pytest.raises(FailedPrecondition):
        track(
            command(event("e-1"), profile_id="p-2", session_id="s-1"),
            make_session(state),
            None,
            new_id=no_ids,
        )


def test_rule_8_is_checked_before_idempotency() -> None:
    stored = {"e-1": StoredEventRef("p-1", "s-1")}
    with pytest.raises(FailedPrecondition):
        track(
            command(event("e-1"), profile_id="p-2", session_id="s-1"),
            make_session(ACTIVE),
            None,
            stored,
            new_id=no_ids,
        )


def test_rule_8_matching_profile_id_is_accepted() -> None:
    outcome = track(
        command(event("e-1"), profile_id="p-1", session_id="s-1"), make_session(), make_profile()
    )
    assert outcome.profile_id == "p-1"
    assert outcome.system_events == ()


# Rule 9: visit-started properties.


def test_rule_9_visit_started_lists_the_calls_event_types_and_visit_number() -> None:
    outcome = track(
        command(event("e-1", "page-view"), event("e-2", "click"), event("e-3", "page-view"))
    )

    started = outcome.system_events[2]
    assert started.type is VS
    assert started.properties == {"trigger_event_types": ["page-view", "click"], "visit_number": 1}


def test_rule_9_visit_number_counts_the_profiles_visits_including_this_one() -> None:
    profile = make_profile(visit_count=11)

    outcome = track(
        command(event("e-1", "purchase"), session_id="s-1"), make_session(IDLE), profile
    )

    assert outcome.system_events[0].properties == {
        "trigger_event_types": ["purchase"],
        "visit_number": 12,
    }
    assert outcome.updated_profile is not None
    assert outcome.updated_profile.visit_count == 12


def test_rule_9_trigger_types_come_only_from_newly_stored_events() -> None:
    stored = {"e-1": StoredEventRef("p-1", "s-1")}

    outcome = track(
        command(event("e-1", "login"), event("e-2", "click"), session_id="s-1"),
        make_session(IDLE),
        make_profile(),
        stored,
    )

    assert outcome.system_events[0].properties["trigger_event_types"] == ["click"]


# Rule 10: source_id of system events.


def test_rule_10_track_system_events_carry_the_calls_source() -> None:
    outcome = track(command(event("e-1"), source_id="app"))

    assert [d.source_id for d in outcome.system_events] == ["app", "app", "app"]
    assert outcome.new_session is not None
    assert outcome.new_session.source_id == "app"
    assert [t.source_id for t in outcome.tracked_events] == ["app"]


def test_rule_10_track_from_another_source_on_existing_session_uses_the_calls_source() -> None:
    session = make_session(IDLE)  # opened from "web"

    outcome = track(
        command(event("e-1"), source_id="app", session_id="s-1"), session, make_profile()
    )

    assert [(d.type, d.source_id) for d in outcome.system_events] == [(VS, "app")]
    assert outcome.updated_session is not None
    assert outcome.updated_session.source_id == "web"


def test_rule_10_timeout_events_carry_the_sessions_source() -> None:
    session = make_session(ACTIVE, source_id="kiosk")

    outcome = decide_expiry(session, NOW + timedelta(days=2), POLICY)

    assert outcome is not None
    assert [(d.type, d.source_id) for d in outcome.system_events] == [
        (VE, "kiosk"),
        (SC, "kiosk"),
    ]


def test_rule_10_end_session_events_carry_the_sessions_source() -> None:
    outcome = decide_end(make_session(ACTIVE, source_id="kiosk"), "", NOW, POLICY)
    assert [d.source_id for d in outcome.system_events] == ["kiosk", "kiosk"]


# Idempotency.


def test_idempotent_all_duplicate_call_answers_with_the_stored_refs() -> None:
    stored = {"e-1": StoredEventRef("p-9", "s-9"), "e-2": StoredEventRef("p-9", "s-9")}

    outcome = track(command(event("e-1"), event("e-2")), None, None, stored, new_id=no_ids)

    assert outcome == Outcome(profile_id="p-9", session_id="s-9", event_ids=("e-1", "e-2"))
    assert outcome.system_events == ()
    assert outcome.tracked_events == ()
    assert (outcome.new_profile, outcome.updated_profile) == (None, None)
    assert (outcome.new_session, outcome.updated_session) == (None, None)


@pytest.mark.parametrize("state", [ACTIVE, IDLE, CLOSED])
def test_idempotent_retry_on_any_session_state_changes_nothing(state: SessionState) -> None:
    stored = {"e-1": StoredEventRef("p-1", "s-1")}

    outcome = track(
        command(event("e-1"), session_id="s-1"),
        make_session(state),
        make_profile(),
        stored,
        now=NOW + timedelta(days=5),
        new_id=no_ids,
    )

    assert outcome == Outcome(profile_id="p-1", session_id="s-1", event_ids=("e-1",))


def test_idempotent_mixed_call_stores_only_the_new_events() -> None:
    session = make_session(ACTIVE)
    stored = {"e-1": StoredEventRef("p-1", "s-1")}

    outcome = track(
        command(event("e-1"), event("e-2"), event(""), session_id="s-1"),
        session,
        make_profile(),
        stored,
    )

    assert outcome.event_ids == ("e-1", "e-2", "id-1")
    assert [t.id for t in outcome.tracked_events] == ["e-2", "id-1"]
    assert outcome.system_events == ()
    assert outcome.updated_session == session._replace(
        last_activity_time=NOW, event_count=9, visit_event_count=5
    )


def test_idempotent_repeated_client_id_within_one_call_is_stored_once() -> None:
    outcome = track(command(event("e-5"), event("e-5", "click"), event("e-6")))

    assert outcome.event_ids == ("e-5", "e-5", "e-6")
    assert [(t.id, t.type) for t in outcome.tracked_events] == [
        ("e-5", "page-view"),
        ("e-6", "page-view"),
    ]
    assert outcome.new_session is not None
    assert outcome.new_session.event_count == 2
    assert outcome.new_session.visit_event_count == 2
    assert outcome.system_events[2].properties["trigger_event_types"] == ["page-view"]


def test_events_without_client_id_get_new_ids_in_order() -> None:
    outcome = track(command(event(""), event(""), session_id="s-1"), make_session(), make_profile())

    assert outcome.event_ids == ("id-1", "id-2")
    assert [t.id for t in outcome.tracked_events] == ["id-1", "id-2"]


# Disabled system-event types.


@pytest.mark.parametrize("disabled", list(SystemEventType), ids=lambda t: t.slug)
def test_disabled_type_is_dropped_from_track_but_state_is_unchanged(
    disabled: SystemEventType,
) -> None:
    policy = replace(POLICY, enabled_types=frozenset(SystemEventType) - {disabled})
    cmd = command(event("e-1"))

    enabled = track(cmd, policy=POLICY)
    without = track(cmd, policy=policy)

    assert types_of(enabled) == [PC, SO, VS]
    assert types_of(without) == [t for t in [PC, SO, VS] if t is not disabled]
    assert without == enabled._replace(
        system_events=tuple(d for d in enabled.system_events if d.type is not disabled)
    )


@pytest.mark.parametrize("disabled", list(SystemEventType), ids=lambda t: t.slug)
def test_disabled_type_is_dropped_from_expiry_and_end_but_state_is_unchanged(
    disabled: SystemEventType,
) -> None:
    policy = replace(POLICY, enabled_types=frozenset(SystemEventType) - {disabled})
    session = make_session(ACTIVE)
    later = NOW + timedelta(days=2)

    for enabled, without in [
        (decide_expiry(session, later, POLICY), decide_expiry(session, later, policy)),
        (decide_end(session, "", NOW, POLICY), decide_end(session, "", NOW, policy)),
    ]:
        assert enabled is not None
        assert without is not None
        assert types_of(enabled) == [VE, SC]
        assert types_of(without) == [t for t in [VE, SC] if t is not disabled]
        assert without.updated_session == enabled.updated_session
        assert without.updated_session is not None
        assert without.updated_session.state is CLOSED


def test_all_types_disabled_still_changes_state_as_if_emitted() -> None:
    policy = replace(POLICY, enabled_types=frozenset())

    opened = track(command(event("e-1")), policy=policy)
    assert opened.system_events == ()
    assert opened.new_profile is not None
    assert opened.new_profile.visit_count == 1
    assert opened.new_session is not None
    assert opened.new_session.state is ACTIVE

    expired = decide_expiry(make_session(ACTIVE), VISIT_DEADLINE, policy)
    assert expired is not None
    assert expired.system_events == ()
    assert expired.updated_session == make_session(ACTIVE)._replace(state=IDLE)


# Profile and session counters across a journey.


def apply(
    outcome: Outcome, session: Session | None, profile: Profile | None
) -> tuple[Session | None, Profile | None]:
    """The current session and profile after storing an outcome."""
    current = outcome.new_session or outcome.updated_session
    if current is None and session is not None and session.id == outcome.session_id:
        current = session
    return current, outcome.new_profile or outcome.updated_profile or profile


def test_counters_follow_a_journey_across_visits_and_sessions() -> None:
    new_id = counter_ids()
    t = NOW
    out = decide_track(command(event("a"), event("b")), None, None, {}, t, POLICY, new_id)
    session, profile = apply(out, None, None)
    assert session is not None
    assert profile is not None
    assert (session.event_count, session.visit_event_count, session.visit_count) == (2, 2, 1)
    assert (profile.visit_count, profile.session_count) == (1, 1)

    t += timedelta(minutes=10)
    cmd = command(event("c"), session_id=session.id)
    out = decide_track(cmd, session, profile, {}, t, POLICY, new_id)
    session, profile = apply(out, session, profile)
    assert session is not None
    assert profile is not None
    assert (session.event_count, session.visit_event_count, session.visit_count) == (3, 3, 1)
    assert (profile.visit_count, profile.session_count) == (1, 1)
    assert profile.last_activity_time == t

    t += timedelta(minutes=45)
    expired = decide_expiry(session, t, POLICY)
    assert expired is not None
    assert expired.system_events[0].properties["event_count"] == 3
    session, profile = apply(expired, session, profile)
    assert session is not None
    assert session.state is IDLE

    cmd = command(event("d"), session_id=session.id)
    out = decide_track(cmd, session, profile, {}, t, POLICY, new_id)
    session, profile = apply(out, session, profile)
    assert session is not None
    assert profile is not None
    assert (session.event_count, session.visit_event_count, session.visit_count) == (4, 1, 2)
    assert (profile.visit_count, profile.session_count) == (2, 1)

    ended = decide_end(session, "bye", t, POLICY)
    assert ended.system_events[0].properties["event_count"] == 1
    session, profile = apply(ended, session, profile)
    assert session is not None
    first_id = session.id

    cmd = command(event("e"), event("f"), event("g"), session_id=session.id)
    out = decide_track(cmd, session, profile, {}, t, POLICY, new_id)
    session, profile = apply(out, session, profile)
    assert session is not None
    assert profile is not None
    assert session.id != first_id
    assert (session.event_count, session.visit_event_count, session.visit_count) == (3, 3, 1)
    assert (profile.visit_count, profile.session_count) == (3, 2)
    assert out.system_events[1].properties["visit_number"] == 3


# Property tests: random operation sequences on one client's session.


@dataclass(frozen=True)
class TrackOp:
    """A Track call with these (client id, type) events; an empty id lets the server choose."""

    events: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class AdvanceOp:
    """Let this many seconds pass; then, if `sweep`, the timeout rules run (as the sweeper)."""

    seconds: int
    sweep: bool


@dataclass(frozen=True)
class ExpireOp:
    """Run the timeout rules at the current time."""


@dataclass(frozen=True)
class EndOp:
    """EndSession with this reason."""

    reason: str


Op = TrackOp | AdvanceOp | ExpireOp | EndOp

track_ops = st.builds(
    TrackOp,
    st.lists(
        st.tuples(
            st.sampled_from(["", "", "a", "b", "c", "d", "e", "f", "g", "h"]),
            st.sampled_from(["page-view", "click"]),
        ),
        min_size=1,
        max_size=4,
    ).map(tuple),
)
advance_ops = st.builds(
    AdvanceOp,
    st.one_of(
        st.integers(0, 120),  # inside a visit
        st.integers(1790, 1810),  # around visit_timeout
        st.integers(1800, 6 * 3600),  # a visit ends, the session stays open
        st.integers(86_390, 200_000),  # around and past session_timeout
    ),
    st.booleans(),
)
op_kinds: dict[str, st.SearchStrategy[Op]] = {
    "track": track_ops,
    "advance": advance_ops,
    "expire": st.just(ExpireOp()),
    "end": st.builds(EndOp, st.sampled_from(["", "logout"])),
}
# Weighted towards tracking and waiting, so that visits end and restart within a session
# (st.one_of would not do: it drops repeated strategies).
ops_strategy: st.SearchStrategy[list[Op]] = st.lists(
    st.sampled_from(
        ["track", "track", "track", "advance", "advance", "advance", "expire", "end"]
    ).flatmap(op_kinds.__getitem__),
    min_size=6,
    max_size=40,
)

ALLOWED = {
    (ACTIVE, ACTIVE): [],
    (ACTIVE, IDLE): [VE],
    (ACTIVE, CLOSED): [VE, SC],
    (IDLE, ACTIVE): [VS],
    (IDLE, CLOSED): [SC],
}
# A Track first applies a timeout that ran out before the sweeper got to it.
TRACK_ALLOWED = {
    (ACTIVE, ACTIVE): [[], [VE, VS]],
    (IDLE, ACTIVE): [[VS]],
    (ACTIVE, CLOSED): [[VE, SC, SO, VS]],
    (IDLE, CLOSED): [[SC, SO, VS]],
}


@dataclass
class Step:
    """One operation: when it ran, the session it acted on (before), and what it decided."""

    op: Op
    now: datetime
    before: Session | None
    outcome: Outcome | None
    failed: bool = False


@dataclass
class World:
    """The state storage would hold for one client following the responses."""

    now: datetime = NOW
    session_id: str = ""
    profile_id: str = ""
    sessions: dict[str, Session] = field(default_factory=dict)
    profile: Profile | None = None
    stored: dict[str, StoredEventRef] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)


def run(ops: Sequence[Op], policy: Policy, profile_id: str) -> World:
    """Apply the operations as the journal would, recording every decision."""
    world = World(profile_id=profile_id)
    new_id = counter_ids("gen")
    for op in ops:
        before = world.sessions.get(world.session_id)
        outcome: Outcome | None
        if isinstance(op, AdvanceOp):
            world.now += timedelta(seconds=op.seconds)
            if not op.sweep or before is None:
                continue
            outcome = decide_expiry(before, world.now, policy)
        elif isinstance(op, TrackOp):
            cmd = TrackCommand(
                source_id="web",
                profile_id=world.profile_id,
                session_id=world.session_id,
                events=[NewTrackedEvent(i, t, b"", None) for i, t in op.events],
            )
            ids = {e.id for e in cmd.events if e.id}
            stored = {i: ref for i, ref in world.stored.items() if i in ids}
            outcome = decide_track(cmd, before, world.profile, stored, world.now, policy, new_id)
            world.session_id, world.profile_id = outcome.session_id, outcome.profile_id
            for tracked in outcome.tracked_events:
                world.stored[tracked.id] = StoredEventRef(tracked.profile_id, tracked.session_id)
        elif isinstance(op, ExpireOp):
            if before is None:
                continue
            outcome = decide_expiry(before, world.now, policy)
        else:
            if before is None:
                continue
            try:
                outcome = decide_end(before, op.reason, world.now, policy)
            except FailedPrecondition:
                world.steps.append(Step(op, world.now, before, None, failed=True))
                continue
        world.steps.append(Step(op, world.now, before, outcome))
        if outcome is None:
            continue
        for changed in (outcome.new_session, outcome.updated_session):
            if changed is not None:
                world.sessions[changed.id] = changed
        world.profile = outcome.new_profile or outcome.updated_profile or world.profile
    return world


@settings(max_examples=100, deadline=None)
@given(ops=ops_strategy, profile_id=st.sampled_from(["", "p-x"]))
def test_property_invariants_hold_for_random_operation_sequences(
    ops: list[Op], profile_id: str
) -> None:
    world = run(ops, POLICY, profile_id)
    visits_started: Counter[str] = Counter()
    sessions_opened = 0
    events_into: Counter[str] = Counter()
    ended_visits: set[tuple[str, int]] = set()
    states: dict[str, SessionState] = {}

    for step in world.steps:
        if step.failed:
            assert isinstance(step.op, EndOp)
            assert step.before is not None
            assert step.before.state is CLOSED
            continue
        outcome = step.outcome
        if outcome is None:
            assert isinstance(step.op, ExpireOp | AdvanceOp)
            continue
        types = types_of(outcome)
        # The documented order within one call: the endings a timeout caused (visit-ended,
        # session-closed), then profile-created, session-opened, visit-started.
        endings = [t for t in types if t in (VE, SC)]
        beginnings = [t for t in types if t not in (VE, SC)]
        assert types == endings + beginnings, types
        assert endings == sorted(set(endings)), types
        assert beginnings == sorted(set(beginnings)), types
        occur = [d.occur_time for d in outcome.system_events]
        assert occur == sorted(occur)
        for draft in outcome.system_events:
            assert draft.profile_id == outcome.profile_id
            if draft.type is PC:
                assert draft.session_id == ""
            elif draft.type in (VE, SC):
                assert step.before is not None
                assert draft.session_id == step.before.id
            else:
                assert draft.session_id == outcome.session_id
            if draft.type is VS:
                visits_started[draft.session_id] += 1
            elif draft.type is SO:
                sessions_opened += 1
            elif draft.type is VE:
                assert step.before is not None
                visit = (step.before.id, step.before.visit_count)
                assert visit not in ended_visits, f"visit {visit} ended twice"
                ended_visits.add(visit)
        for tracked in outcome.tracked_events:
            events_into[tracked.session_id] += 1

        if outcome.new_session is not None:
            assert outcome.new_session.id not in states
            assert outcome.new_session.state is ACTIVE
            assert types[-2:] == [SO, VS]
            states[outcome.new_session.id] = ACTIVE
        if outcome.updated_session is not None:
            old = states[outcome.updated_session.id]
            new = outcome.updated_session.state
            if isinstance(step.op, TrackOp):
                assert (old, new) in TRACK_ALLOWED, f"forbidden {old.name} -> {new.name}"
                assert types in TRACK_ALLOWED[old, new], types
            else:
                assert (old, new) in ALLOWED, f"forbidden transition {old.name} -> {new.name}"
                assert types == ALLOWED[old, new]
            states[outcome.updated_session.id] = new
            if isinstance(step.op, ExpireOp | AdvanceOp):
                assert decide_expiry(outcome.updated_session, step.now, POLICY) is None
        if not outcome.tracked_events and isinstance(step.op, TrackOp):
            # A pure retry: nothing at all changes.
            assert outcome.system_events == ()
            assert outcome.new_session is None
            assert outcome.updated_session is None
            assert outcome.new_profile is None
            assert outcome.updated_profile is None

    for session in world.sessions.values():
        assert session.visit_count == visits_started[session.id]
        assert session.event_count == events_into[session.id]
        assert session.state is states[session.id]
        assert sum(1 for sid, _ in ended_visits if sid == session.id) <= session.visit_count
        assert (session.close_time is None) == (session.state is not CLOSED)
    if world.profile is not None:
        assert world.profile.visit_count == sum(visits_started.values())
        assert world.profile.session_count == sessions_opened == len(world.sessions)
        if profile_id:
            assert world.profile.id == profile_id


@settings(max_examples=100, deadline=None)
@given(
    ops=ops_strategy,
    disabled=st.frozensets(st.sampled_from(list(SystemEventType))),
)
def test_property_disabled_types_never_change_state(
    ops: list[Op], disabled: frozenset[SystemEventType]
) -> None:
    policy = replace(POLICY, enabled_types=frozenset(SystemEventType) - disabled)

    full = run(ops, POLICY, "")
    partial = run(ops, policy, "")

    assert partial.sessions == full.sessions
    assert partial.profile == full.profile
    assert len(partial.steps) == len(full.steps)
    for mine, theirs in zip(partial.steps, full.steps, strict=True):
        if theirs.outcome is None:
            assert mine.outcome is None
            continue
        assert mine.outcome == theirs.outcome._replace(
            system_events=tuple(d for d in theirs.outcome.system_events if d.type not in disabled),
        )
