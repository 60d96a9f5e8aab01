"""The API contract end to end: bad input, errors, sources, switches, settings, paging, health."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import grpc
import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.empty_pb2 import Empty
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from journey.clock import ManualClock
from journey.config import Source
from journey.domain.model import SystemEventType
from journey_client import pb
from tests.conftest import SettingsFactory
from tests.integration.harness import Harness, serving, types_of

T = pb.SystemEventType
S = pb.SessionState
Code = grpc.StatusCode

PC = T.SYSTEM_EVENT_TYPE_PROFILE_CREATED
SO = T.SYSTEM_EVENT_TYPE_SESSION_OPENED
VS = T.SYSTEM_EVENT_TYPE_VISIT_STARTED
VE = T.SYSTEM_EVENT_TYPE_VISIT_ENDED
SC = T.SYSTEM_EVENT_TYPE_SESSION_CLOSED
NEW_SESSION = [PC, SO, VS]

JOURNEY_SERVICES = (
    "journey.v1.TrackerService",
    "journey.v1.SystemEventService",
    "journey.v1.SessionService",
    "journey.v1.SettingsService",
)
LONG_ID = "x" * 129
START = datetime(2030, 1, 1, tzinfo=UTC)


async def rpc_error(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    """The error a call fails with; fails the test if it succeeds."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def violated_fields(error: grpc.aio.AioRpcError) -> list[str]:
    """The field paths of the google.rpc.BadRequest detail the error carries."""
    status = rpc_status.from_call(cast(grpc.Call, error))
    assert status is not None, "no google.rpc.Status in the trailers"
    assert len(status.details) == 1
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request), status.details[0].type_url
    return [v.field for v in bad_request.field_violations]


def timestamp(moment: datetime) -> Timestamp:
    """A protobuf Timestamp."""
    message = Timestamp()
    message.FromDatetime(moment)
    return message


async def list_events(h: Harness, **fields: Any) -> list[pb.SystemEvent]:
    """Every system event a ListSystemEvents query matches, following the page tokens."""
    out: list[pb.SystemEvent] = []
    token = ""
    while True:
        page = await h.events.ListSystemEvents(
            pb.ListSystemEventsRequest(page_token=token, **fields)
        )
        out.extend(page.system_events)
        token = page.next_page_token
        if not token:
            return out


async def next_event(call: grpc.aio.UnaryStreamCall[Any, pb.SubscribeResponse]) -> pb.SystemEvent:
    """The next event on a subscription, skipping checkpoints; fails on anything else."""
    async with asyncio.timeout(5):
        while True:
            response = await call.read()
            assert isinstance(response, pb.SubscribeResponse), "the stream ended"
            kind = response.WhichOneof("content")
            if kind == "event":
                return response.event
            assert kind == "checkpoint", response


# --- (a) INVALID_ARGUMENT ---------------------------------------------------------------------


def track_request(**changes: Any) -> pb.TrackRequest:
    """A valid Track that opens session `s-bad` for new profile `p-bad`, with `changes` applied."""
    fields: dict[str, Any] = {
        "source_id": "web",
        "profile_id": "p-bad",
        "session_id": "s-bad",
        "events": [
            pb.TrackedEvent(id="e-bad-0", type="page-view"),
            pb.TrackedEvent(id="e-bad-1", type="click"),
        ],
    }
    fields.update(changes)
    return pb.TrackRequest(**fields)


def second_event(**fields: Any) -> list[pb.TrackedEvent]:
    """Two events, the second of them built from `fields` (so the path names index 1)."""
    return [pb.TrackedEvent(id="e-bad-0", type="page-view"), pb.TrackedEvent(**fields)]


def big_properties() -> Struct:
    """Event properties of more than 64 KiB serialized."""
    properties = Struct()
    properties.update({"blob": "x" * (64 * 1024)})
    assert properties.ByteSize() > 64 * 1024
    return properties


@dataclass(frozen=True)
class BadCall:
    """A request that must fail with INVALID_ARGUMENT naming `field`."""

    field: str
    call: Callable[[Harness], Awaitable[object]]


def bad_track(field: str, **changes: Any) -> BadCall:
    """A Track made invalid by `changes`."""
    return BadCall(field, lambda h: h.tracker.Track(track_request(**changes)))


async def _foreign_page_token(h: Harness) -> object:
    first = await h.events.ListSystemEvents(pb.ListSystemEventsRequest(page_size=1))
    assert first.next_page_token
    return await h.events.ListSystemEvents(
        pb.ListSystemEventsRequest(
            page_size=1,
            page_token=first.next_page_token,
            filter=pb.SystemEventFilter(source_id="web"),
        )
    )


async def _subscribe_unknown_type(h: Harness) -> object:
    unknown = cast(pb.SystemEventType.ValueType, 99)
    request = pb.SubscribeRequest(beginning=Empty(), filter=pb.SystemEventFilter(types=[unknown]))
    return [message async for message in h.events.Subscribe(request)]


BAD_CALLS = [
    pytest.param(bad_track("source_id", source_id=""), id="track-missing-source_id"),
    pytest.param(bad_track("events", events=[]), id="track-no-events"),
    pytest.param(
        bad_track("events", events=[pb.TrackedEvent(type="page-view")] * 501),
        id="track-501-events",
    ),
    pytest.param(
        bad_track("events[1].type", events=second_event(id="e-bad-1", type="")),
        id="track-empty-type",
    ),
    pytest.param(
        bad_track("events[1].type", events=second_event(id="e-bad-1", type="t" * 129)),
        id="track-type-129-chars",
    ),
    pytest.param(
        bad_track(
            "events[1].properties",
            events=second_event(id="e-bad-1", type="click", properties=big_properties()),
        ),
        id="track-properties-over-64KiB",
    ),
    pytest.param(bad_track("source_id", source_id=LONG_ID), id="track-long-source_id"),
    pytest.param(bad_track("profile_id", profile_id=LONG_ID), id="track-long-profile_id"),
    pytest.param(bad_track("session_id", session_id=LONG_ID), id="track-long-session_id"),
    pytest.param(
        bad_track("events[1].id", events=second_event(id=LONG_ID, type="click")),
        id="track-long-event-id",
    ),
    pytest.param(
        BadCall("session_id", lambda h: h.sessions.GetSession(pb.GetSessionRequest())),
        id="get-session-empty-id",
    ),
    pytest.param(
        BadCall(
            "session_id", lambda h: h.sessions.GetSession(pb.GetSessionRequest(session_id=LONG_ID))
        ),
        id="get-session-long-id",
    ),
    pytest.param(
        BadCall("session_id", lambda h: h.sessions.EndSession(pb.EndSessionRequest())),
        id="end-session-empty-id",
    ),
    pytest.param(
        BadCall(
            "session_id", lambda h: h.sessions.EndSession(pb.EndSessionRequest(session_id=LONG_ID))
        ),
        id="end-session-long-id",
    ),
    pytest.param(
        BadCall("profile_id", lambda h: h.sessions.GetProfile(pb.GetProfileRequest())),
        id="get-profile-empty-id",
    ),
    pytest.param(
        BadCall(
            "profile_id", lambda h: h.sessions.GetProfile(pb.GetProfileRequest(profile_id=LONG_ID))
        ),
        id="get-profile-long-id",
    ),
    pytest.param(
        BadCall(
            "page_size",
            lambda h: h.events.ListSystemEvents(pb.ListSystemEventsRequest(page_size=-1)),
        ),
        id="list-negative-page_size",
    ),
    pytest.param(
        BadCall(
            "page_token",
            lambda h: h.events.ListSystemEvents(pb.ListSystemEventsRequest(page_token="garbage!")),
        ),
        id="list-garbage-page_token",
    ),
    pytest.param(BadCall("page_token", _foreign_page_token), id="list-page_token-other-filter"),
    pytest.param(
        BadCall(
            "filter.types[1]",
            lambda h: h.events.ListSystemEvents(
                pb.ListSystemEventsRequest(
                    filter=pb.SystemEventFilter(types=[VS, cast(pb.SystemEventType.ValueType, 99)])
                )
            ),
        ),
        id="list-unknown-type",
    ),
    pytest.param(BadCall("filter.types[0]", _subscribe_unknown_type), id="subscribe-unknown-type"),
]


@pytest.mark.parametrize("bad", BAD_CALLS)
async def test_bad_request_is_invalid_argument_naming_the_field_and_stores_nothing(
    make_settings: SettingsFactory, bad: BadCall
) -> None:
    async with serving(make_settings()) as h:
        baseline = await h.track("page-view", session_id="s-base", profile_id="p-base")
        before = await h.all_events()
        assert types_of(before) == NEW_SESSION

        error = await rpc_error(bad.call(h))

        assert error.code() == Code.INVALID_ARGUMENT
        assert (error.details() or "").startswith(f"{bad.field}: "), error.details()
        assert violated_fields(error) == [bad.field]
        assert await h.all_events() == before
        base = await h.sessions.GetSession(pb.GetSessionRequest(session_id=baseline.session_id))
        assert (base.session.state, base.session.event_count) == (S.SESSION_STATE_ACTIVE, 1)
        # Still serving, and the refused Track left no trace: profile p-bad, session s-bad and
        # client event ids e-bad-* are all new (a stored id would make this a silent retry).
        again = await h.tracker.Track(track_request())
        assert types_of(again.system_events) == NEW_SESSION
        assert (again.profile_id, again.session_id) == ("p-bad", "s-bad")
        assert list(again.event_ids) == ["e-bad-0", "e-bad-1"]


async def test_limits_are_inclusive(make_settings: SettingsFactory) -> None:
    properties = Struct()
    size = 64 * 1024
    while True:
        properties.update({"blob": "x" * size})
        if properties.ByteSize() <= 64 * 1024:
            break
        size -= 1
    assert properties.ByteSize() == 64 * 1024
    ids = [f"{i:03d}".rjust(128, "e") for i in range(500)]
    events = [pb.TrackedEvent(id=event_id, type="t" * 128) for event_id in ids]
    events[0].properties.CopyFrom(properties)
    async with serving(make_settings()) as h:
        response = await h.tracker.Track(
            pb.TrackRequest(
                source_id="s" * 128, profile_id="p" * 128, session_id="q" * 128, events=events
            )
        )
        assert types_of(response.system_events) == NEW_SESSION
        assert list(response.event_ids) == ids
        got = await h.sessions.GetSession(pb.GetSessionRequest(session_id="q" * 128))
        assert got.session.event_count == 500


# --- (b) NOT_FOUND and FAILED_PRECONDITION ----------------------------------------------------


async def test_unknown_session_or_profile_is_not_found(make_settings: SettingsFactory) -> None:
    async with serving(make_settings()) as h:
        await h.track("page-view", session_id="s-1", profile_id="p-1")
        before = await h.all_events()
        calls: list[tuple[Awaitable[object], str]] = [
            (h.sessions.GetSession(pb.GetSessionRequest(session_id="s-missing")), "s-missing"),
            (h.sessions.EndSession(pb.EndSessionRequest(session_id="s-missing")), "s-missing"),
            (h.sessions.GetProfile(pb.GetProfileRequest(profile_id="p-missing")), "p-missing"),
            # A profile id is not a session id, nor the other way round.
            (h.sessions.GetSession(pb.GetSessionRequest(session_id="p-1")), "p-1"),
            (h.sessions.GetProfile(pb.GetProfileRequest(profile_id="s-1")), "s-1"),
        ]
        for call, missing in calls:
            error = await rpc_error(call)
            assert error.code() == Code.NOT_FOUND, error
            assert missing in (error.details() or "")
        assert await h.all_events() == before
        got = await h.sessions.GetSession(pb.GetSessionRequest(session_id="s-1"))
        assert got.session.state == S.SESSION_STATE_ACTIVE


async def test_end_session_on_closed_session_is_failed_precondition(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        await h.track("page-view", session_id="s-1", profile_id="p-1")
        ended = await h.sessions.EndSession(pb.EndSessionRequest(session_id="s-1", reason="bye"))
        assert types_of(ended.system_events) == [VE, SC]
        before = await h.all_events()

        error = await rpc_error(h.sessions.EndSession(pb.EndSessionRequest(session_id="s-1")))

        assert error.code() == Code.FAILED_PRECONDITION
        assert "s-1" in (error.details() or "")
        assert await h.all_events() == before
        got = await h.sessions.GetSession(pb.GetSessionRequest(session_id="s-1"))
        assert got.session.state == S.SESSION_STATE_CLOSED
        assert got.session.close_time == ended.session.close_time


# --- (c) sources ------------------------------------------------------------------------------


async def test_registered_sources_refuse_unknown_and_disabled_ones(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(sources=(Source("web"), Source("old", enabled=False)))
    async with serving(settings) as h:
        accepted = await h.track("page-view", source_id="web", session_id="s-web")
        assert types_of(accepted.system_events) == NEW_SESSION
        assert {e.source_id for e in accepted.system_events} == {"web"}
        before = await h.all_events()

        unknown = await rpc_error(h.track("page-view", source_id="mobile", session_id="s-mobile"))
        disabled = await rpc_error(h.track("page-view", source_id="old", session_id="s-old"))
        # Also on a session that exists: the source is checked first, nothing changes.
        disabled_existing = await rpc_error(
            h.track("page-view", source_id="old", session_id="s-web")
        )

        assert unknown.code() == Code.NOT_FOUND
        assert "mobile" in (unknown.details() or "")
        for error in (disabled, disabled_existing):
            assert error.code() == Code.FAILED_PRECONDITION
            assert "old" in (error.details() or "")
        assert await h.all_events() == before
        for missing in ("s-mobile", "s-old"):
            error = await rpc_error(h.sessions.GetSession(pb.GetSessionRequest(session_id=missing)))
            assert error.code() == Code.NOT_FOUND
        web = await h.sessions.GetSession(pb.GetSessionRequest(session_id="s-web"))
        assert web.session.event_count == 1


async def test_without_registered_sources_any_source_is_accepted(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        for source in ("web", "anything-at-all", "x" * 128):
            response = await h.track("page-view", source_id=source)
            assert types_of(response.system_events) == NEW_SESSION
            assert {e.source_id for e in response.system_events} == {source}
            session = await h.sessions.GetSession(
                pb.GetSessionRequest(session_id=response.session_id)
            )
            assert session.session.source_id == source


# --- (d) disabled system-event types ----------------------------------------------------------


async def test_disabled_type_is_never_returned_stored_or_streamed_but_state_changes(
    make_settings: SettingsFactory,
) -> None:
    switches = {kind: kind is not SystemEventType.VISIT_STARTED for kind in SystemEventType}
    assert len(switches) == 5
    clock = ManualClock(START)
    async with serving(make_settings(system_events=switches), clock=clock) as h:
        live = h.events.Subscribe(pb.SubscribeRequest(end=Empty()))
        first = await live.read()
        assert isinstance(first, pb.SubscribeResponse)
        assert first.WhichOneof("content") == "caught_up"

        opened = await h.track("page-view", session_id="s-1", profile_id="p-1")
        assert types_of(opened.system_events) == [PC, SO]
        session = (await h.sessions.GetSession(pb.GetSessionRequest(session_id="s-1"))).session
        profile = (await h.sessions.GetProfile(pb.GetProfileRequest(profile_id="p-1"))).profile
        assert (session.state, session.visit_count) == (S.SESSION_STATE_ACTIVE, 1)
        assert (profile.visit_count, profile.session_count) == (1, 1)

        # The visit times out (swept here directly, so no real time needs to pass).
        clock.advance(timedelta(minutes=31))
        await h.server.sweeper.sweep_once()
        seen = [await next_event(live) for _ in range(3)]
        assert types_of(seen) == [PC, SO, VE]
        session = (await h.sessions.GetSession(pb.GetSessionRequest(session_id="s-1"))).session
        assert session.state == S.SESSION_STATE_IDLE

        # Back on the idle session: a new visit starts, silently.
        resumed = await h.track("click", session_id="s-1")
        assert types_of(resumed.system_events) == []
        session = (await h.sessions.GetSession(pb.GetSessionRequest(session_id="s-1"))).session
        profile = (await h.sessions.GetProfile(pb.GetProfileRequest(profile_id="p-1"))).profile
        assert (session.state, session.visit_count, session.event_count) == (
            S.SESSION_STATE_ACTIVE,
            2,
            2,
        )
        assert profile.visit_count == 2

        second = await h.track("page-view", session_id="s-2", profile_id="p-1")
        assert types_of(second.system_events) == [SO]
        ended = await h.sessions.EndSession(pb.EndSessionRequest(session_id="s-1"))
        assert types_of(ended.system_events) == [VE, SC]
        profile = (await h.sessions.GetProfile(pb.GetProfileRequest(profile_id="p-1"))).profile
        assert (profile.visit_count, profile.session_count) == (3, 2)

        seen.extend([await next_event(live) for _ in range(3)])
        live.cancel()
        expected = [PC, SO, VE, SO, VE, SC]
        assert types_of(seen) == expected
        stored = await h.all_events()
        assert types_of(stored) == expected
        assert await list_events(h, filter=pb.SystemEventFilter(types=[VS])) == []

        # A replay holds no visit-started either: caught_up comes first, at the head.
        replay = h.events.Subscribe(
            pb.SubscribeRequest(beginning=Empty(), filter=pb.SystemEventFilter(types=[VS]))
        )
        head = await replay.read()
        replay.cancel()
        assert isinstance(head, pb.SubscribeResponse)
        assert head.WhichOneof("content") == "caught_up"
        assert head.caught_up.position == stored[-1].position


# --- (e) settings -----------------------------------------------------------------------------


async def test_get_settings_reports_the_effective_configuration(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        defaults = await h.settings.GetSettings(pb.GetSettingsRequest())
    assert sorted(defaults.enabled_types) == [PC, SO, VS, VE, SC]
    assert defaults.visit_timeout.ToTimedelta() == timedelta(minutes=30)
    assert defaults.session_timeout.ToTimedelta() == timedelta(hours=24)
    assert defaults.heartbeat_interval.ToTimedelta() == timedelta(seconds=5)
    assert list(defaults.source_ids) == []

    settings = make_settings(
        visit_timeout=timedelta(seconds=90),
        session_timeout=timedelta(hours=2),
        heartbeat_interval=timedelta(milliseconds=1500),
        system_events={kind: kind is not SystemEventType.VISIT_ENDED for kind in SystemEventType},
        sources=(Source("web"), Source("old", enabled=False)),
    )
    async with serving(settings) as h:
        custom = await h.settings.GetSettings(pb.GetSettingsRequest())
    assert sorted(custom.enabled_types) == [PC, SO, VS, SC]
    assert custom.visit_timeout.ToTimedelta() == timedelta(seconds=90)
    assert custom.session_timeout.ToTimedelta() == timedelta(hours=2)
    assert custom.heartbeat_interval.ToTimedelta() == timedelta(milliseconds=1500)
    assert sorted(custom.source_ids) == ["old", "web"]


# --- (f) ListSystemEvents ---------------------------------------------------------------------


async def test_list_pages_default_to_100_clamp_to_1000_and_visit_everything_once(
    make_settings: SettingsFactory,
) -> None:
    sessions = 367  # three system events each: 1101 in all
    async with serving(make_settings()) as h:
        responses = await asyncio.gather(
            *(h.track("page-view", session_id=f"s-{i}") for i in range(sessions))
        )
        tracked = sorted(e.position for r in responses for e in r.system_events)
        assert len(tracked) == 3 * sessions

        default = await h.events.ListSystemEvents(pb.ListSystemEventsRequest())
        assert len(default.system_events) == 100
        assert default.next_page_token

        clamped = await h.events.ListSystemEvents(pb.ListSystemEventsRequest(page_size=5000))
        assert len(clamped.system_events) == 1000
        assert clamped.next_page_token
        rest = await h.events.ListSystemEvents(
            pb.ListSystemEventsRequest(page_size=5000, page_token=clamped.next_page_token)
        )
        assert len(rest.system_events) == 101
        assert rest.next_page_token == ""
        assert [e.position for e in [*clamped.system_events, *rest.system_events]] == tracked

        pages: list[Sequence[pb.SystemEvent]] = []
        token = ""
        while True:
            page = await h.events.ListSystemEvents(pb.ListSystemEventsRequest(page_token=token))
            pages.append(page.system_events)
            token = page.next_page_token
            if not token:
                break
        assert [len(p) for p in pages] == [100] * 11 + [1]
        positions = [e.position for p in pages for e in p]
        assert positions == tracked  # position order, every event exactly once
        assert len({e.id for p in pages for e in p}) == len(tracked)
        assert list(pages[0]) == list(default.system_events)


async def test_list_filters_by_types_profile_session_and_source(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        await h.track("page-view", source_id="web", profile_id="p-1", session_id="s-1")
        await h.track("page-view", source_id="app", profile_id="p-2", session_id="s-2")
        await h.track("page-view", source_id="app", profile_id="p-1", session_id="s-3")
        await h.sessions.EndSession(pb.EndSessionRequest(session_id="s-1"))
        everything = await h.all_events()
        assert types_of(everything) == [PC, SO, VS, PC, SO, VS, SO, VS, VE, SC]
        positions = [e.position for e in everything]
        assert positions == sorted(set(positions))

        async def query(**fields: Any) -> list[tuple[int, str, str, str]]:
            events = await list_events(h, filter=pb.SystemEventFilter(**fields))
            assert [e.position for e in events] == sorted(e.position for e in events)
            return [(e.type, e.profile_id, e.session_id, e.source_id) for e in events]

        assert await query(types=[SO]) == [
            (SO, "p-1", "s-1", "web"),
            (SO, "p-2", "s-2", "app"),
            (SO, "p-1", "s-3", "app"),
        ]
        assert await query(types=[SC, PC]) == [
            (PC, "p-1", "", "web"),
            (PC, "p-2", "", "app"),
            (SC, "p-1", "s-1", "web"),
        ]
        assert [t for t, *_ in await query(profile_id="p-1")] == [PC, SO, VS, SO, VS, VE, SC]
        assert await query(session_id="s-1") == [
            (SO, "p-1", "s-1", "web"),
            (VS, "p-1", "s-1", "web"),
            (VE, "p-1", "s-1", "web"),
            (SC, "p-1", "s-1", "web"),
        ]
        assert await query(source_id="app") == [
            (PC, "p-2", "", "app"),
            (SO, "p-2", "s-2", "app"),
            (VS, "p-2", "s-2", "app"),
            (SO, "p-1", "s-3", "app"),
            (VS, "p-1", "s-3", "app"),
        ]
        assert await query(types=[VS], profile_id="p-1", source_id="app") == [
            (VS, "p-1", "s-3", "app")
        ]
        assert await query(profile_id="nobody") == []

        # A filtered query pages too, its token continuing the same filter.
        first = await h.events.ListSystemEvents(
            pb.ListSystemEventsRequest(page_size=3, filter=pb.SystemEventFilter(session_id="s-1"))
        )
        assert types_of(first.system_events) == [SO, VS, VE]
        last = await h.events.ListSystemEvents(
            pb.ListSystemEventsRequest(
                page_size=3,
                page_token=first.next_page_token,
                filter=pb.SystemEventFilter(session_id="s-1"),
            )
        )
        assert types_of(last.system_events) == [SC]
        assert last.next_page_token == ""


async def test_list_start_time_is_inclusive_and_end_time_exclusive(
    make_settings: SettingsFactory,
) -> None:
    clock = ManualClock(START)
    t0, t1, t2 = START, START + timedelta(minutes=1), START + timedelta(minutes=2)
    async with serving(make_settings(), clock=clock) as h:
        await h.track("page-view", profile_id="p-0")
        clock.advance(t1 - t0)
        await h.track("page-view", profile_id="p-1")
        clock.advance(t2 - t1)
        await h.track("page-view", profile_id="p-2")

        everything = await h.all_events()
        assert [e.occur_time.ToDatetime(tzinfo=UTC) for e in everything] == [t0] * 3 + [t1] * 3 + [
            t2
        ] * 3

        async def profiles(**bounds: datetime) -> list[str]:
            times = {name: timestamp(moment) for name, moment in bounds.items()}
            return [e.profile_id for e in await list_events(h, **times)]

        assert await profiles(start_time=t1) == ["p-1"] * 3 + ["p-2"] * 3
        assert await profiles(end_time=t1) == ["p-0"] * 3
        assert await profiles(start_time=t1, end_time=t2) == ["p-1"] * 3
        assert await profiles(start_time=t0, end_time=t2 + timedelta(seconds=1)) == (
            ["p-0"] * 3 + ["p-1"] * 3 + ["p-2"] * 3
        )
        assert await profiles(start_time=t1, end_time=t1) == []
        assert await profiles(start_time=t2 + timedelta(microseconds=1)) == []


# --- (g) health checking and reflection --------------------------------------------------------


async def test_health_is_serving_and_reflection_lists_the_services(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        health = health_pb2_grpc.HealthStub(h.channel)
        for service in ("", *JOURNEY_SERVICES):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service

        unknown = await rpc_error(
            health.Check(health_pb2.HealthCheckRequest(service="journey.v1.NoSuchService"))
        )
        assert unknown.code() == Code.NOT_FOUND

        reflection = reflection_pb2_grpc.ServerReflectionStub(h.channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            *(
                reflection_pb2.ServerReflectionRequest(file_containing_symbol=name)
                for name in JOURNEY_SERVICES
            ),
        ]
        replies = [reply async for reply in reflection.ServerReflectionInfo(iter(requests))]
        assert len(replies) == 1 + len(JOURNEY_SERVICES)
        listed = {s.name for s in replies[0].list_services_response.service}
        assert set(JOURNEY_SERVICES) <= listed
        assert "grpc.health.v1.Health" in listed
        for name, reply in zip(JOURNEY_SERVICES, replies[1:], strict=True):
            assert reply.WhichOneof("message_response") == "file_descriptor_response", name
            files = [
                descriptor_pb2.FileDescriptorProto.FromString(raw)
                for raw in reply.file_descriptor_response.file_descriptor_proto
            ]
            declared = [f"{f.package}.{s.name}" for f in files for s in f.service]
            assert name in declared, (name, declared)
