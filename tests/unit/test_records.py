"""values(): a domain record as the column values the writer inserts."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from journey.domain.model import Profile, Session, SessionState, SystemEvent, SystemEventType
from journey.storage.records import values

NOW = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)


def test_every_field_by_name_with_enums_as_plain_integers() -> None:
    session = Session(
        id="s",
        profile_id="p",
        source_id="web",
        state=SessionState.IDLE,
        open_time=NOW,
        last_activity_time=NOW,
        close_time=None,
        event_count=3,
        visit_count=1,
        visit_start_time=NOW,
        visit_event_count=2,
    )
    row = values(session)
    assert row == {f.name: getattr(session, f.name) for f in dataclasses.fields(Session)}
    # A plain int, not the IntEnum: drivers bind exactly what they are given.
    assert type(row["state"]) is int
    assert row["state"] == int(SessionState.IDLE)


def test_each_class_keeps_its_own_shape() -> None:
    event = SystemEvent(
        position=7,
        id="e",
        type=SystemEventType.VISIT_ENDED,
        occur_time=NOW,
        profile_id="p",
        session_id="s",
        source_id="web",
        properties={"reason": "inactivity"},
    )
    profile = Profile(
        id="p", create_time=NOW, last_activity_time=NOW, visit_count=1, session_count=1
    )
    event_row = values(event)
    assert type(event_row["type"]) is int
    assert event_row["properties"] is event.properties  # shallow, not copied
    assert values(profile) == {
        "id": "p",
        "create_time": NOW,
        "last_activity_time": NOW,
        "visit_count": 1,
        "session_count": 1,
    }
