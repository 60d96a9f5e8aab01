"""SQL and LIKE metacharacters in every id and filter match literally (parameterised queries)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf.empty_pb2 import Empty

from journey_client import pb
from tests.conftest import SettingsFactory
from tests.integration.harness import Harness, serving

EOF = grpc.aio.EOF  # type: ignore[attr-defined]  # missing from grpc-stubs

# Each hostile id has decoys that a wildcard or a broken quote would also match: `%` matches
# anything, `_` any one character, `\` escapes, `'` ends a string literal.
HOSTILE = ["a'b", "a%b", "a_b", "a\\b", "'; DROP TABLE sessions; --", "%", "_", "\\", "''"]
DECOYS = ["aXb", "ab", "a\\\\b", "a", "b", "x"]
SOURCES = ["src'%_\\", "srcX"]


async def track_everything(h: Harness) -> None:
    """One session per (source, id), whose profile, session and event ids are all that id."""
    for source in SOURCES:
        for value in HOSTILE + DECOYS:
            await h.track(
                "page-view",
                source_id=source,
                profile_id=f"{source}|{value}",
                session_id=f"{source}|{value}",
                ids=[value],
            )


async def subscribed(h: Harness, event_filter: pb.SystemEventFilter) -> list[pb.SystemEvent]:
    """Every stored event that Subscribe replays for the filter, up to caught_up."""
    stream = h.events.Subscribe(pb.SubscribeRequest(filter=event_filter, beginning=Empty()))
    events: list[pb.SystemEvent] = []
    try:
        async with asyncio.timeout(20):
            while (message := await stream.read()) is not EOF:
                assert isinstance(message, pb.SubscribeResponse)
                if message.HasField("caught_up"):
                    return events
                if message.HasField("event"):
                    events.append(message.event)
    finally:
        stream.cancel()
    raise AssertionError("the stream ended before caught_up")


async def listed(h: Harness, event_filter: pb.SystemEventFilter) -> list[pb.SystemEvent]:
    page = await h.events.ListSystemEvents(
        pb.ListSystemEventsRequest(filter=event_filter, page_size=1000)
    )
    assert not page.next_page_token
    return list(page.system_events)


async def test_metacharacters_in_ids_and_filters_match_literally(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        await track_everything(h)
        total = len(SOURCES) * len(HOSTILE + DECOYS)
        for source in SOURCES:
            for value in HOSTILE:
                key = f"{source}|{value}"
                session = await h.sessions.GetSession(pb.GetSessionRequest(session_id=key))
                assert (session.session.id, session.session.source_id) == (key, source)
                profile = await h.sessions.GetProfile(pb.GetProfileRequest(profile_id=key))
                assert profile.profile.id == key

                # Tracking the same client event id again stores nothing: the idempotency
                # lookup found exactly this id, not a look-alike.
                again = await h.track("page-view", source_id=source, ids=[value])
                assert (again.session_id, list(again.system_events)) == (key, [])

                # profile-created (no session id), session-opened, visit-started.
                for event_filter, expected in (
                    (pb.SystemEventFilter(session_id=key), 2),
                    (pb.SystemEventFilter(profile_id=key), 3),
                    (pb.SystemEventFilter(source_id=source, session_id=key), 2),
                ):
                    for read in (listed, subscribed):
                        events = await read(h, event_filter)
                        assert len(events) == expected, (read.__name__, event_filter)
                        assert {e.session_id for e in events} - {""} == {key}
                        assert {e.profile_id for e in events} == {key}

            by_source = pb.SystemEventFilter(source_id=source)
            for read in (listed, subscribed):
                events = await read(h, by_source)
                assert len(events) == 3 * len(HOSTILE + DECOYS), read.__name__
                assert {e.source_id for e in events} == {source}

        for value in HOSTILE:
            for event_filter in (
                pb.SystemEventFilter(session_id=value),
                pb.SystemEventFilter(profile_id=value),
                pb.SystemEventFilter(source_id=value),
            ):
                assert await listed(h, event_filter) == []
            for request in (
                h.sessions.GetSession(pb.GetSessionRequest(session_id=value)),
                h.sessions.GetProfile(pb.GetProfileRequest(profile_id=value)),
                h.sessions.EndSession(pb.EndSessionRequest(session_id=value)),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await request
                assert raised.value.code() == grpc.StatusCode.NOT_FOUND

        # EndSession closes exactly the session named, and no look-alike.
        closing = f"{SOURCES[0]}|a_b"
        ended = await h.sessions.EndSession(
            pb.EndSessionRequest(session_id=closing, reason="'; --%_\\")
        )
        assert ended.session.state == pb.SessionState.SESSION_STATE_CLOSED
        closed = [e for e in await listed(h, pb.SystemEventFilter()) if e.session_id == closing]
        assert closed[-1].properties["reason"] == "'; --%_\\"
        for value in HOSTILE + DECOYS:
            other = f"{SOURCES[0]}|{value}"
            if other != closing:
                session = await h.sessions.GetSession(pb.GetSessionRequest(session_id=other))
                assert session.session.state != pb.SessionState.SESSION_STATE_CLOSED, other

        # Nothing was lost or added on the way: 3 events per session, then the close's 2.
        assert len(await h.all_events()) == 3 * total + 2
