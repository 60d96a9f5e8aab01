"""A first round trip: Track answers with the system events a new session causes."""

from __future__ import annotations

from journey_client import pb
from tests.conftest import SettingsFactory
from tests.integration.harness import serving, types_of

T = pb.SystemEventType


async def test_track_on_new_session_creates_profile_session_and_visit(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        response = await h.track("page-view")
        assert types_of(response.system_events) == [
            T.SYSTEM_EVENT_TYPE_PROFILE_CREATED,
            T.SYSTEM_EVENT_TYPE_SESSION_OPENED,
            T.SYSTEM_EVENT_TYPE_VISIT_STARTED,
        ]
