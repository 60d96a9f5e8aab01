"""row(), field_names() and values(): a domain record as the column values the writer inserts."""

from __future__ import annotations

from journey.domain.model import Session, SessionState, SystemEvent, SystemEventType
from journey.storage.records import field_names, row, values
from tests.unit.test_rules import NOW, make_profile, make_session


def test_every_field_in_order_with_enums_as_plain_integers() -> None:
    session = make_session(SessionState.IDLE)
    values = row(session)
    assert field_names(Session) == Session._fields
    assert values == tuple(getattr(session, name) for name in Session._fields)
    # A plain int, not the IntEnum: drivers bind exactly what they are given.
    state = values[field_names(Session).index("state")]
    assert type(state) is int
    assert state == int(SessionState.IDLE)


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
    event_row = values(event)
    assert type(event_row["type"]) is int
    assert event_row["properties"] is event.properties  # shallow, not copied
    profile = make_profile()
    assert values(profile) == {
        "id": profile.id,
        "create_time": profile.create_time,
        "last_activity_time": profile.last_activity_time,
        "visit_count": profile.visit_count,
        "session_count": profile.session_count,
    }
