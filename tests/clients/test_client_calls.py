"""Every JourneyClient call against a real in-process server."""

from __future__ import annotations

import pytest

from journey_client import (
    FailedPrecondition,
    InvalidArgument,
    JourneyClient,
    NotFound,
    event_filter,
    pb,
    tracked_event,
)
from tests.conftest import SettingsFactory
from tests.integration.harness import serving

T = pb.SystemEventType


async def test_track_read_list_and_end(make_settings: SettingsFactory) -> None:
    async with (
        serving(make_settings()) as harness,
        JourneyClient(f"127.0.0.1:{harness.port}") as client,
    ):
        response = await client.track(
            "web",
            [tracked_event("page-view", {"url": "/"}, id="a"), "click"],
            profile_id="alice",
            context={"device": "phone"},
        )
        assert response.event_ids == ["a", response.event_ids[1]]
        session = await client.get_session(response.session_id)
        assert (session.profile_id, session.event_count) == ("alice", 2)
        profile = await client.get_profile("alice")
        assert profile.session_count == 1
        for i in range(4):
            await client.track("app", ["page-view"], profile_id=f"p{i}")

        every = [e async for e in client.list_system_events(page_size=2)]
        assert [e.position for e in every] == list(range(1, 16))
        only = event_filter(["visit-started"], source_id="app")
        started = [e async for e in client.list_system_events(only, page_size=1)]
        assert [e.profile_id for e in started] == ["p0", "p1", "p2", "p3"]

        ended = await client.end_session(response.session_id, "logout")
        assert ended.session.state == pb.SessionState.SESSION_STATE_CLOSED
        assert [e.type for e in ended.system_events] == [
            T.SYSTEM_EVENT_TYPE_VISIT_ENDED,
            T.SYSTEM_EVENT_TYPE_SESSION_CLOSED,
        ]
        settings = await client.get_settings()
        assert T.SYSTEM_EVENT_TYPE_VISIT_ENDED in settings.enabled_types

        with pytest.raises(FailedPrecondition, match="closed"):
            await client.end_session(response.session_id)
        with pytest.raises(NotFound):
            await client.get_profile("nobody")
        with pytest.raises(InvalidArgument) as raised:
            await client.track("", [])
        fields = {v.field for v in raised.value.violations}
        assert {"source_id", "events"} <= fields


async def test_subscribe_from_a_position_then_live(make_settings: SettingsFactory) -> None:
    async with (
        serving(make_settings()) as harness,
        JourneyClient(f"127.0.0.1:{harness.port}") as client,
    ):
        first = await client.track("web", ["page-view"])
        subscription = client.subscribe(
            event_filter(["session-opened", "visit-started"]),
            start=first.system_events[0].position,  # profile-created
        )
        replayed = [await anext(subscription), await anext(subscription)]
        second = await client.track("web", ["page-view"])
        live = [await anext(subscription), await anext(subscription)]
        await subscription.aclose()
    assert [e.session_id for e in replayed] == [first.session_id] * 2
    assert [e.session_id for e in live] == [second.session_id] * 2
    assert [e.type for e in live] == [
        T.SYSTEM_EVENT_TYPE_SESSION_OPENED,
        T.SYSTEM_EVENT_TYPE_VISIT_STARTED,
    ]
    assert subscription.last_position == second.system_events[-1].position
